package tfgo

// String tensors of any rank through TensorFlow's C library: a SavedModel written by the venv's
// TensorFlow takes a [batch, 2, 3] and a scalar string input and returns string outputs of rank 3 and
// 0 and a numeric one; the runtime feeds and fetches them as the worker does (Check, Load, Prepare,
// Run, Outputs), and what it returns is what NumPy would hold.

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"harness/go/internal/testenv"
	"harness/go/worker"
)

// stringModel writes the SavedModel and its artifact.json (signature read by the harness's own
// read_signature) with the venv's Python; without it the test is skipped with the reason.
func stringModel(t *testing.T) (*worker.Artifact, string) {
	t.Helper()
	py := testenv.Python(t)
	dir := t.TempDir()
	code := `
import json, os, sys
from dataclasses import asdict
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import tensorflow as tf
from harness.export.common import read_signature

class Strings(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 2, 3], tf.string, name="words"), tf.TensorSpec([], tf.string, name="suffix")])
    def serve(self, words, suffix):
        return {"joined": tf.strings.join([words, suffix]), "lengths": tf.strings.length(words), "first": words[0, 1, 2]}

m = Strings()
folder = sys.argv[1]
tf.saved_model.save(m, folder + "/saved_model", signatures={"serving_default": m.serve})
ins, outs = read_signature(folder + "/saved_model")
art = {"fixture": "strings", "format": "savedmodel", "status": "ok", "path": "saved_model", "signature": "serving_default",
       "inputs": [asdict(s) for s in ins], "outputs": [asdict(s) for s in outs], "extra": {"tag": "serve"}}
open(folder + "/artifact.json", "w").write(json.dumps(art))
`
	if out, err := exec.Command(py, "-c", code, dir).CombinedOutput(); err != nil {
		t.Fatalf("python failed: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "artifact.json"))
	if err != nil {
		t.Fatal(err)
	}
	art := &worker.Artifact{}
	if err := json.Unmarshal(raw, art); err != nil {
		t.Fatal(err)
	}
	return art, filepath.Join(dir, art.Path)
}

func TestStringTensorsOfAnyRank(t *testing.T) {
	art, modelPath := stringModel(t)
	rt := Runtime{}
	if err := rt.Check(art, modelPath); err != nil {
		t.Fatal(err)
	}
	s, err := rt.Load(art, modelPath, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	stored := map[string]string{}
	for _, spec := range append(art.Inputs, art.Outputs...) {
		stored[spec.Name] = spec.StoredName
	}
	// Raw bytes, NUL inside and an empty element included, as NumPy's |S holds them.
	words := []string{"a", "bc", "", "d\x00e", "fgh", "ij", "k", "lm", "nop", "q", "rs", "t"}
	feeds := map[string]*worker.Array{
		stored["words"]:  worker.NewArray([]int64{2, 2, 3}, words),
		stored["suffix"]: worker.NewArray([]int64{}, []string{"!"}),
	}
	prepared, err := s.Prepare(feeds)
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Run(prepared)
	if err != nil {
		t.Fatal(err)
	}
	outs, err := r.Outputs()
	if err != nil {
		t.Fatal(err)
	}
	joined := make([]string, len(words))
	lengths := make([]int32, len(words))
	for i, w := range words {
		joined[i], lengths[i] = w+"!", int32(len(w))
	}
	want := map[string]*worker.Array{
		"joined":  worker.NewArray([]int64{2, 2, 3}, joined),
		"lengths": worker.NewArray([]int64{2, 2, 3}, lengths),
		"first":   worker.NewArray([]int64{}, []string{"ij"}),
	}
	for name, w := range want {
		got := outs[stored[name]]
		if got == nil || got.DType != w.DType || !reflect.DeepEqual(got.Shape, w.Shape) || !reflect.DeepEqual(got.Data, w.Data) {
			t.Errorf("%s: got %+v, want %+v", name, got, w)
		}
	}
	// A string output goes out as NumPy's |S<n>, the longest element's width.
	path := filepath.Join(t.TempDir(), "joined.npy")
	if err := worker.WriteNpy(path, outs[stored["joined"]]); err != nil {
		t.Fatal(err)
	}
	back, err := worker.ReadNpy(path)
	if err != nil || !reflect.DeepEqual(back.Data, joined) || !reflect.DeepEqual(back.Shape, []int64{2, 2, 3}) {
		t.Errorf("joined.npy read back as %+v, %v", back, err)
	}
	if raw, _ := os.ReadFile(path); !strings.Contains(string(raw), "'descr': '|S4'") {
		t.Errorf("joined.npy header: %q", raw[:64])
	}
}

func TestStringTensorShapes(t *testing.T) {
	for _, c := range []struct {
		shape []int64
		strs  []string
	}{
		{[]int64{}, []string{"scalar"}},
		{[]int64{3}, []string{"a", "b", "c"}},
		{[]int64{2, 1, 2}, []string{"a", "b", "c", "d"}},
		{[]int64{2, 0}, []string{}},
		{[]int64{0}, []string{}},
	} {
		tensor, err := StringTensor(c.shape, c.strs)
		if err != nil {
			t.Fatalf("%v: %v", c.shape, err)
		}
		if !reflect.DeepEqual(tensor.Shape(), c.shape) && !(len(c.shape) == 0 && len(tensor.Shape()) == 0) {
			t.Errorf("%v: tensor has shape %v", c.shape, tensor.Shape())
		}
		if got := flatten(reflect.ValueOf(tensor.Value()), nil); len(c.strs) > 0 && !reflect.DeepEqual(got, c.strs) {
			t.Errorf("%v: tensor holds %q, want %q", c.shape, got, c.strs)
		}
	}
	// Refused with the reason: too few strings, and an empty shape the bindings cannot make.
	if _, err := StringTensor([]int64{2, 2}, []string{"a"}); err == nil || !strings.Contains(err.Error(), "1 strings for shape [2 2], expected 4") {
		t.Errorf("short: got %v", err)
	}
	if _, err := StringTensor([]int64{0, 3}, []string{}); err == nil || !strings.Contains(err.Error(), "cannot make an empty string tensor of shape [0 3]") {
		t.Errorf("[0 3]: got %v", err)
	}
}
