package worker

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"

	"codeberg.org/sbinet/npyio/npy"
)

// Array is an N-dimensional tensor in host memory: a NumPy dtype name ("float32"), a C-order shape
// and the flat data as a typed Go slice ([]float32, []int64, []bool, ...). Runtimes build their own
// tensors from it; the flat layout is what both TensorFlow and ONNX Runtime take.
type Array struct {
	DType string
	Shape []int64
	Data  any
}

// dtype is one NumPy element type the worker reads and writes.
type dtype struct {
	name  string       // NumPy's name, as artifact.json spells it
	code  string       // kind and size in the .npy descr, without the byte-order mark
	elem  reflect.Type // Go element type
	bytes int
}

var dtypes = []dtype{
	{"float32", "f4", reflect.TypeFor[float32](), 4},
	{"float64", "f8", reflect.TypeFor[float64](), 8},
	{"int8", "i1", reflect.TypeFor[int8](), 1},
	{"int16", "i2", reflect.TypeFor[int16](), 2},
	{"int32", "i4", reflect.TypeFor[int32](), 4},
	{"int64", "i8", reflect.TypeFor[int64](), 8},
	{"uint8", "u1", reflect.TypeFor[uint8](), 1},
	{"uint16", "u2", reflect.TypeFor[uint16](), 2},
	{"uint32", "u4", reflect.TypeFor[uint32](), 4},
	{"uint64", "u8", reflect.TypeFor[uint64](), 8},
	{"bool", "b1", reflect.TypeFor[bool](), 1},
}

// otherNames gives NumPy's name for .npy codes the worker does not read, so that a wrong input
// still gets the message protocol.py gives ("has dtype float16, expected float32").
var otherNames = map[string]string{"f2": "float16", "c8": "complex64", "c16": "complex128"}

func dtypeByName(name string) (dtype, bool) {
	for _, d := range dtypes {
		if d.name == name {
			return d, true
		}
	}
	return dtype{}, false
}

// NewArray makes an Array from a flat typed slice; it panics on an element type the worker does not
// know (a programming error, not bad input). A []string is a string tensor, dtype "bytes" (one Go
// string of raw bytes per element, as NumPy's fixed-width |S<n> holds them).
func NewArray(shape []int64, data any) *Array {
	if _, ok := data.([]string); ok {
		return &Array{DType: "bytes", Shape: shape, Data: data}
	}
	t := reflect.TypeOf(data)
	for _, d := range dtypes {
		if t.Kind() == reflect.Slice && t.Elem() == d.elem {
			return &Array{DType: d.name, Shape: shape, Data: data}
		}
	}
	panic(fmt.Sprintf("npy: unsupported Go type %v", t))
}

// ArrayFromBytes makes an Array of a dtype from little-endian element bytes (a runtime's CPU tensor).
func ArrayFromBytes(dtypeName string, shape []int64, raw []byte) (*Array, error) {
	dt, ok := dtypeByName(dtypeName)
	if !ok {
		return nil, fmt.Errorf("dtype %s is not supported", dtypeName)
	}
	n := numElements(shape)
	if int64(len(raw)) != n*int64(dt.bytes) {
		return nil, fmt.Errorf("%d bytes for shape %v of %s, expected %d", len(raw), shape, dtypeName, n*int64(dt.bytes))
	}
	data := reflect.MakeSlice(reflect.SliceOf(dt.elem), int(n), int(n))
	if err := binary.Read(bytes.NewReader(raw), binary.LittleEndian, data.Interface()); err != nil {
		return nil, err
	}
	return &Array{DType: dt.name, Shape: shape, Data: data.Interface()}, nil
}

// Len is the number of elements the shape holds.
func (a *Array) Len() int64 { return numElements(a.Shape) }

// Bytes returns the data little-endian, as TensorFlow's and ONNX Runtime's CPU tensors hold it.
func (a *Array) Bytes() []byte {
	var buf bytes.Buffer
	if err := binary.Write(&buf, binary.LittleEndian, a.Data); err != nil {
		panic(fmt.Sprintf("npy: %v", err)) // every dtype in the table is fixed-size
	}
	return buf.Bytes()
}

func numElements(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}

// countingReader counts what the npy reader consumed, to know where the header ends.
type countingReader struct {
	r io.Reader
	n int64
}

// Read reads from the underlying reader and counts the bytes.
func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// ReadNpy reads a .npy file (format 1.0 to 3.0, either byte order, C order) with npyio.
//
// An element type the worker does not read comes back as an Array with its NumPy name and no data,
// so the caller reports a dtype mismatch the way protocol.py does. Errors say what is wrong with
// the file; os.ErrNotExist is kept for a missing file.
func ReadNpy(path string) (arr *Array, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	// npyio slices the header dictionary by position, and a mangled header can make it panic.
	defer func() {
		if p := recover(); p != nil {
			arr, err = nil, fmt.Errorf("unreadable header (%v)", p)
		}
	}()
	counter := &countingReader{r: bufio.NewReader(f)}
	r, err := npy.NewReader(counter)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, fmt.Errorf("file ends inside the header (%d bytes)", info.Size())
	} else if err != nil {
		return nil, err
	}
	descr := strings.Trim(r.Header.Descr.Type, `'" `)
	if r.Header.Descr.Fortran {
		return nil, fmt.Errorf("array is in Fortran order, expected C order")
	}
	shape := make([]int64, len(r.Header.Descr.Shape))
	for i, d := range r.Header.Descr.Shape {
		if d < 0 {
			return nil, fmt.Errorf("negative dimension in shape %v", r.Header.Descr.Shape)
		}
		shape[i] = int64(d)
	}
	if len(descr) < 2 || !strings.ContainsRune("<>|=", rune(descr[0])) {
		return nil, fmt.Errorf("unsupported descr %q", descr)
	}
	code := descr[1:]
	if width, err := strconv.Atoi(strings.TrimPrefix(code, "S")); strings.HasPrefix(code, "S") && err == nil && width > 0 {
		return readFixedBytes(path, counter.n, shape, width)
	}
	var dt dtype
	found := false
	for _, d := range dtypes {
		if d.code == code {
			dt, found = d, true
		}
	}
	if !found {
		name, ok := otherNames[code]
		if !ok {
			name = descr
		}
		return &Array{DType: name, Shape: shape}, nil
	}
	// npyio reads a short file as zeros, so the size is checked here, as NumPy does.
	want := numElements(shape) * int64(dt.bytes)
	if have := info.Size() - counter.n; have < want {
		return nil, fmt.Errorf("truncated data: %d bytes for shape %v of %s, expected %d", have, shape, dt.name, want)
	}
	ptr := reflect.New(reflect.SliceOf(dt.elem))
	if err := r.Read(ptr.Interface()); err != nil {
		return nil, err
	}
	data := ptr.Elem()
	if int64(data.Len()) != numElements(shape) { // npyio leaves a nil slice for zero elements
		data = reflect.MakeSlice(data.Type(), int(numElements(shape)), int(numElements(shape)))
	}
	return &Array{DType: dt.name, Shape: shape, Data: data.Interface()}, nil
}

// WriteNpy writes an array as .npy format 1.0, little-endian, C order, header padded to 64 bytes as
// NumPy writes it; a string tensor (dtype "bytes") as fixed-width |S<n>. It does not use npyio's
// writer: that one writes format 2.0, and only 1-D arrays from a flat slice, while the protocol asks
// for format 1.0 and outputs are N-dimensional.
func WriteNpy(path string, a *Array) error {
	if strs, ok := a.Data.([]string); ok && a.DType == "bytes" {
		return writeFixedBytes(path, a.Shape, strs)
	}
	return WriteNpyRaw(path, a.DType, a.Shape, a.Bytes())
}

// WriteNpyRaw writes little-endian element bytes (as a runtime's CPU tensor holds them) as .npy.
func WriteNpyRaw(path, dtypeName string, shape []int64, data []byte) error {
	dt, ok := dtypeByName(dtypeName)
	if !ok {
		return fmt.Errorf("cannot write dtype %s", dtypeName)
	}
	if want := numElements(shape) * int64(dt.bytes); int64(len(data)) != want {
		return fmt.Errorf("%d data bytes for shape %v of %s, expected %d", len(data), shape, dtypeName, want)
	}
	order := "<"
	if dt.bytes == 1 {
		order = "|"
	}
	return writeNpyFile(path, order+dt.code, shape, data)
}

// writeNpyFile writes a .npy format 1.0 file of descr ("<f4", "|S12"), C order, header padded to 64
// bytes as NumPy writes it, then the data as given.
func writeNpyFile(path, descr string, shape []int64, data []byte) error {
	dims := make([]string, len(shape))
	for i, d := range shape {
		dims[i] = strconv.FormatInt(d, 10)
	}
	tuple := "(" + strings.Join(dims, ", ") + ")"
	if len(shape) == 1 {
		tuple = "(" + dims[0] + ",)"
	}
	header := fmt.Sprintf("{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr, tuple)
	// magic (6) + version (2) + header length (2) + header + '\n' is a multiple of 64.
	pad := 63 - (10+len(header))%64
	header += strings.Repeat(" ", pad) + "\n"
	var buf bytes.Buffer
	buf.WriteString("\x93NUMPY\x01\x00")
	_ = binary.Write(&buf, binary.LittleEndian, uint16(len(header)))
	buf.WriteString(header)
	buf.Write(data)
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// writeFixedBytes writes a string tensor as NumPy's fixed-width bytes, descr "|S<width>": width is
// the longest element (at least 1, as NumPy has no |S0), each element NUL-padded to it. Trailing NUL
// bytes of an element do not survive (NumPy strips them on reading), as with every |S array.
func writeFixedBytes(path string, shape []int64, strs []string) error {
	if int64(len(strs)) != numElements(shape) {
		return fmt.Errorf("%d strings for shape %v, expected %d", len(strs), shape, numElements(shape))
	}
	width := 1
	for _, s := range strs {
		width = max(width, len(s))
	}
	data := make([]byte, len(strs)*width)
	for i, s := range strs {
		copy(data[i*width:], s)
	}
	return writeNpyFile(path, "|S"+strconv.Itoa(width), shape, data)
}

// readFixedBytes reads the data of a NumPy fixed-width bytes array (descr "|S<width>", how the harness
// writes string tensors such as serialized tf.Example protos) after a header of headerLen bytes: one
// Go string per element, trailing NUL padding removed as NumPy does. Its dtype is "bytes".
func readFixedBytes(path string, headerLen int64, shape []int64, width int) (*Array, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	n := numElements(shape)
	data := raw[headerLen:]
	if int64(len(data)) < n*int64(width) {
		return nil, fmt.Errorf("truncated data: %d bytes for shape %v of S%d, expected %d", len(data), shape, width, n*int64(width))
	}
	out := make([]string, n)
	for i := range out {
		out[i] = strings.TrimRight(string(data[int64(i)*int64(width):int64(i+1)*int64(width)]), "\x00")
	}
	return &Array{DType: "bytes", Shape: shape, Data: out}, nil
}
