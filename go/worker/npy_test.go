package worker

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"harness/go/internal/testenv"
)

// checkWritten ends a Python script that defines `d` (the folder) and `want` (name -> array): NumPy
// must read each file Go wrote as `want` says, with a version 1.0 header padded to 64 bytes.
const checkWritten = `
for name, w in want.items():
    path = f"{d}/{name}.npy"
    with open(path, "rb") as f:
        assert np.lib.format.read_magic(f) == (1, 0), name
        np.lib.format.read_array_header_1_0(f)
        assert f.tell() % 64 == 0, (name, f.tell())
    got = np.load(path, allow_pickle=False)
    assert got.dtype == w.dtype and got.shape == w.shape, (name, got.dtype, got.shape)
    assert np.array_equal(got, w), (name, got, w)
print("ok")
`

func runPython(t *testing.T, code string, args ...string) string {
	t.Helper()
	out, err := exec.Command(testenv.Python(t), append([]string{"-c", code}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("python failed: %v\n%s", err, out)
	}
	return string(out)
}

// Every dtype the fixtures use, N-dimensional, 0-d, empty and big-endian, written by NumPy.
func TestReadNpyWrittenByNumPy(t *testing.T) {
	dir := t.TempDir()
	runPython(t, `
import sys, numpy as np
d = sys.argv[1]
np.save(d + "/f32.npy", np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 8)
np.save(d + "/f64.npy", np.array([[1.5, -2.25], [1e300, -0.0]], dtype=np.float64))
np.save(d + "/i32.npy", np.array([[-2147483648, 7]], dtype=np.int32))
np.save(d + "/i64.npy", np.array([-(2**63), 2**62], dtype=np.int64))
np.save(d + "/i8.npy", np.array([-128, 0, 127], dtype=np.int8))
np.save(d + "/u8.npy", np.arange(6, dtype=np.uint8).reshape(1, 2, 3) * 50)
np.save(d + "/b.npy", np.array([[True, False], [False, True]]))
np.save(d + "/scalar.npy", np.float32(3.5))
np.save(d + "/empty.npy", np.zeros((0, 3), np.float32))
np.save(d + "/be.npy", np.array([1.0, 2.5], dtype=">f4"))
np.save(d + "/f16.npy", np.zeros(2, np.float16))
`, dir)
	cases := []struct {
		file  string
		dtype string
		shape []int64
		data  any
	}{
		{"f32", "float32", []int64{2, 3, 4}, func() []float32 {
			v := make([]float32, 24)
			for i := range v {
				v[i] = float32(i) / 8
			}
			return v
		}()},
		{"f64", "float64", []int64{2, 2}, []float64{1.5, -2.25, 1e300, 0}},
		{"i32", "int32", []int64{1, 2}, []int32{-2147483648, 7}},
		{"i64", "int64", []int64{2}, []int64{-1 << 63, 1 << 62}},
		{"i8", "int8", []int64{3}, []int8{-128, 0, 127}},
		{"u8", "uint8", []int64{1, 2, 3}, []uint8{0, 50, 100, 150, 200, 250}},
		{"b", "bool", []int64{2, 2}, []bool{true, false, false, true}},
		{"scalar", "float32", []int64{}, []float32{3.5}},
		{"empty", "float32", []int64{0, 3}, []float32{}},
		{"be", "float32", []int64{2}, []float32{1, 2.5}},
	}
	for _, c := range cases {
		arr, err := ReadNpy(filepath.Join(dir, c.file+".npy"))
		if err != nil {
			t.Fatalf("%s: %v", c.file, err)
		}
		if arr.DType != c.dtype || !reflect.DeepEqual(arr.Shape, c.shape) || !reflect.DeepEqual(arr.Data, c.data) {
			t.Errorf("%s: got %s %v %v, want %s %v %v", c.file, arr.DType, arr.Shape, arr.Data, c.dtype, c.shape, c.data)
		}
	}
	// A dtype the worker does not read still has NumPy's name, for the dtype mismatch message.
	arr, err := ReadNpy(filepath.Join(dir, "f16.npy"))
	if err != nil || arr.DType != "float16" || arr.Data != nil {
		t.Errorf("f16: got %+v, %v; want dtype float16 without data", arr, err)
	}
}

// What Go writes, NumPy reads back exactly, as format 1.0, N-dimensional.
func TestWriteNpyReadByNumPy(t *testing.T) {
	dir := t.TempDir()
	arrays := map[string]*Array{
		"f32":    NewArray([]int64{2, 1, 3}, []float32{0.5, -1, 2, 3.25, 1e-30, -0}),
		"f64":    NewArray([]int64{3}, []float64{1.5, -2.25, 1e300}),
		"i32":    NewArray([]int64{2, 2}, []int32{-2147483648, 7, 0, 1}),
		"i64":    NewArray([]int64{2}, []int64{-1 << 63, 1 << 62}),
		"i8":     NewArray([]int64{3}, []int8{-128, 0, 127}),
		"u8":     NewArray([]int64{1, 3}, []uint8{0, 128, 255}),
		"b":      NewArray([]int64{2, 2}, []bool{true, false, false, true}),
		"scalar": NewArray([]int64{}, []float32{3.5}),
		"empty":  NewArray([]int64{0, 3}, []float32{}),
	}
	for name, arr := range arrays {
		if err := WriteNpy(filepath.Join(dir, name+".npy"), arr); err != nil {
			t.Fatal(err)
		}
	}
	runPython(t, `
import sys, numpy as np
d = sys.argv[1]
want = {
    "f32": np.array([0.5, -1, 2, 3.25, 1e-30, -0.0], np.float32).reshape(2, 1, 3),
    "f64": np.array([1.5, -2.25, 1e300]),
    "i32": np.array([[-2147483648, 7], [0, 1]], np.int32),
    "i64": np.array([-(2**63), 2**62], np.int64),
    "i8": np.array([-128, 0, 127], np.int8),
    "u8": np.array([[0, 128, 255]], np.uint8),
    "b": np.array([[True, False], [False, True]]),
    "scalar": np.float32(3.5),
    "empty": np.zeros((0, 3), np.float32),
}
`+checkWritten, dir)
}

// Corrupt and missing files give errors, never a panic or silent zeros.
func TestReadNpyCorrupt(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.npy")
	if err := WriteNpy(good, NewArray([]int64{4}, []float32{1, 2, 3, 4})); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(good)
	files := map[string][]byte{
		"truncated": raw[:len(raw)-3],
		"notnpy":    []byte("hello, this is not a numpy file at all"),
		"empty":     {},
		"badheader": append([]byte("\x93NUMPY\x01\x00\x10\x00{'shape': (2,)}"), make([]byte, 8)...),
	}
	for name, content := range files {
		path := filepath.Join(dir, name+".npy")
		if err := os.WriteFile(path, content, 0o644); err != nil {
			t.Fatal(err)
		}
		arr, err := ReadNpy(path)
		if err == nil {
			t.Errorf("%s: read %+v, want an error", name, arr)
		}
		t.Logf("%s: %v", name, err)
	}
	runPython(t, "import sys, numpy as np; np.save(sys.argv[1], np.asfortranarray(np.ones((2, 3), np.float32)))", filepath.Join(dir, "fortran.npy"))
	if _, err := ReadNpy(filepath.Join(dir, "fortran.npy")); err == nil || !strings.Contains(err.Error(), "Fortran order") {
		t.Errorf("fortran: got %v, want a Fortran order error", err)
	}
	if _, err := ReadNpy(filepath.Join(dir, "missing.npy")); !os.IsNotExist(err) {
		t.Errorf("missing file: got %v, want a not-exist error", err)
	}
}

// Fixed-width bytes (serialized protos, with NUL bytes inside and a shorter element padded), as the
// harness writes string inputs.
func TestReadNpyFixedBytes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.npy")
	runPython(t, `import sys, numpy as np; np.save(sys.argv[1], np.array([b"\n\x05a\x00b", b"xy"], dtype=bytes))`, path)
	arr, err := ReadNpy(path)
	if err != nil {
		t.Fatal(err)
	}
	if arr.DType != "bytes" || !reflect.DeepEqual(arr.Shape, []int64{2}) || !reflect.DeepEqual(arr.Data, []string{"\n\x05a\x00b", "xy"}) {
		t.Fatalf("got %s %v %q", arr.DType, arr.Shape, arr.Data)
	}
	// Cut inside the data: an error naming the shortfall, not a short string.
	runPython(t, `import sys, numpy as np; np.save(sys.argv[1], np.array([b"abc", b"defg"], dtype=bytes))`, path)
	raw, _ := os.ReadFile(path)
	if err := os.WriteFile(path, raw[:len(raw)-3], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadNpy(path); err == nil || !strings.Contains(err.Error(), "truncated data") {
		t.Fatalf("want a truncation error, got %v", err)
	}
}

// String tensors of any rank: NumPy's N-dimensional |S arrays read as flat C-order strings, and what
// Go writes (a string output of a model) NumPy reads back as the same |S array, 0-d and empty too.
func TestFixedBytesAnyRank(t *testing.T) {
	dir := t.TempDir()
	runPython(t, `import sys, numpy as np; np.save(sys.argv[1], np.array([[b"a", b"bc\x00d", b""], [b"efgh", b"i", b"jk"]], dtype=bytes))`,
		filepath.Join(dir, "in.npy"))
	arr, err := ReadNpy(filepath.Join(dir, "in.npy"))
	if err != nil {
		t.Fatal(err)
	}
	if arr.DType != "bytes" || !reflect.DeepEqual(arr.Shape, []int64{2, 3}) || !reflect.DeepEqual(arr.Data, []string{"a", "bc\x00d", "", "efgh", "i", "jk"}) {
		t.Fatalf("got %s %v %q", arr.DType, arr.Shape, arr.Data)
	}
	arrays := map[string]*Array{
		"grid":   NewArray([]int64{2, 2, 1}, []string{"x", "\n\x05yz", "", "long string"}),
		"scalar": NewArray([]int64{}, []string{"one"}),
		"blank":  NewArray([]int64{2}, []string{"", ""}),
		"empty":  NewArray([]int64{0, 3}, []string{}),
	}
	for name, a := range arrays {
		if a.DType != "bytes" {
			t.Fatalf("%s: dtype %s, want bytes", name, a.DType)
		}
		if err := WriteNpy(filepath.Join(dir, name+".npy"), a); err != nil {
			t.Fatal(err)
		}
	}
	if err := WriteNpy(filepath.Join(dir, "bad.npy"), NewArray([]int64{3}, []string{"a"})); err == nil || !strings.Contains(err.Error(), "1 strings for shape [3], expected 3") {
		t.Errorf("a short string array: got %v, want an error", err)
	}
	runPython(t, `
import sys, numpy as np
d = sys.argv[1]
want = {
    "grid": np.array([[[b"x"], [b"\n\x05yz"]], [[b""], [b"long string"]]], dtype="S11"),
    "scalar": np.array(b"one", dtype="S3"),
    "blank": np.array([b"", b""], dtype="S1"),
    "empty": np.zeros((0, 3), dtype="S1"),
}
`+checkWritten, dir)
	// What NumPy wrote, Go reads and writes back byte for byte.
	if err := WriteNpy(filepath.Join(dir, "again.npy"), arr); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(filepath.Join(dir, "in.npy"))
	b, _ := os.ReadFile(filepath.Join(dir, "again.npy"))
	if !reflect.DeepEqual(a, b) {
		t.Errorf("a |S4 array read and written again differs from NumPy's file:\n%q\n%q", a, b)
	}
}
