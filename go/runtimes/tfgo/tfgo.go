// Package tfgo is the go-tfgo runtime: SavedModel artifacts run with github.com/galeone/tfgo on the
// TensorFlow C library of the venv's TensorFlow wheel (see ../../build.sh for how it is linked).
//
// Tensors are fed and fetched by the graph names recorded in artifact.json (stored_name), checked
// first against the SavedModel's own signature, so a stale or wrong artifact.json is reported as
// such instead of as an obscure TensorFlow error.
package tfgo

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"

	tf "github.com/galeone/tensorflow/tensorflow/go"
	pb "github.com/galeone/tensorflow/tensorflow/go/core/protobuf/for_core_protos_go_proto"
	tg "github.com/galeone/tfgo"
	"google.golang.org/protobuf/proto"

	"harness/go/worker"
)

// Runtime is the go-tfgo runtime. Its zero value is ready to use.
type Runtime struct{}

// Name is the runtime's name in the harness's table.
func (Runtime) Name() string { return "go-tfgo" }

// Formats lists the artifact formats go-tfgo loads.
func (Runtime) Formats() []string { return []string{"savedmodel"} }

// Versions reports the TensorFlow C library actually loaded and the Go modules linked in.
func (Runtime) Versions() map[string]string {
	return map[string]string{
		"tensorflow":    tf.Version(),
		"tfgo":          worker.ModuleVersion("github.com/galeone/tfgo"),
		"tensorflow-go": worker.ModuleVersion("github.com/galeone/tensorflow/tensorflow/go"),
		"npyio":         worker.ModuleVersion("codeberg.org/sbinet/npyio"),
		"go":            goruntime.Version(),
	}
}

var dtypes = map[tf.DataType]string{
	tf.Float: "float32", tf.Double: "float64", tf.Int8: "int8", tf.Int16: "int16", tf.Int32: "int32",
	tf.Int64: "int64", tf.Uint8: "uint8", tf.Uint16: "uint16", tf.Bool: "bool",
}

func tfType(name string) (tf.DataType, bool) {
	for t, n := range dtypes {
		if n == name {
			return t, true
		}
	}
	return 0, false
}

// Check reads saved_model.pb and verifies that a meta graph has the artifact's tag, that it has
// the signature, and that the signature names the tensors artifact.json records. TensorFlow would
// only say "Could not find meta graph def matching supplied tags" or fail at run time.
func (Runtime) Check(art *worker.Artifact, modelPath string) error {
	root, err := worker.Contain(art, modelPath)
	if err != nil {
		return err
	}
	tag := art.ExtraString("tag", "serve")
	raw, err := os.ReadFile(filepath.Join(modelPath, "saved_model.pb"))
	if os.IsNotExist(err) {
		return nil // a saved_model.pbtxt: TensorFlow reads it, the load will tell
	} else if err != nil {
		return worker.Errorf(worker.LoadFailed, "SavedModel %s: %v", modelPath, err)
	}
	var saved pb.SavedModel
	if err := proto.Unmarshal(raw, &saved); err != nil {
		return worker.Errorf(worker.LoadFailed, "SavedModel %s: saved_model.pb is not a SavedModel (%v)", modelPath, err)
	}
	var tagSets []string
	var meta *pb.MetaGraphDef
	for _, m := range saved.GetMetaGraphs() {
		tags := m.GetMetaInfoDef().GetTags()
		tagSets = append(tagSets, "{"+strings.Join(tags, ", ")+"}")
		if sameTagSet(tags, tagSet(tag)) {
			meta = m
		}
	}
	if meta == nil {
		return worker.Errorf(worker.LoadFailed, "SavedModel %s has no meta graph with tag '%s': expected one of %s", modelPath, tag, strings.Join(tagSets, ", "))
	}
	// Assets are files under assets/ named in saved_model.pb; TensorFlow joins the name as it is.
	for _, m := range saved.GetMetaGraphs() {
		for _, asset := range m.GetAssetFileDef() {
			if _, err := worker.Inside(root, filepath.Join(modelPath, "assets"), asset.GetFilename(), "SavedModel asset"); err != nil {
				return err
			}
		}
	}
	// "__saved_model_init_op" is stored as a signature but is none to a caller (Python TF hides it).
	signatures := map[string]*pb.SignatureDef{}
	for name, def := range meta.GetSignatureDef() {
		if !strings.HasPrefix(name, "__") {
			signatures[name] = def
		}
	}
	sig, ok := signatures[art.Signature]
	if !ok {
		return worker.Fail(worker.LoadFailed, "unknown_signature", worker.Facts{"field": "signature", "path": modelPath, "expected": slices.Sorted(maps.Keys(signatures)), "got": art.Signature})
	}
	if err := checkNames("input", art.Signature, art.Inputs, sig.GetInputs()); err != nil {
		return err
	}
	return checkNames("output", art.Signature, art.Outputs, sig.GetOutputs())
}

func checkNames(what, signature string, specs []worker.Spec, infos map[string]*pb.TensorInfo) error {
	for _, spec := range specs {
		info, ok := infos[spec.Name]
		if !ok {
			return worker.Errorf(worker.LoadFailed, "signature '%s' has no %s '%s': expected one of %s", signature, what, spec.Name, quoted(slices.Sorted(maps.Keys(infos))))
		}
		if info.GetName() != spec.StoredName {
			return worker.Errorf(worker.LoadFailed, "%s '%s': artifact.json names tensor '%s', but signature '%s' has '%s'", what, spec.Name, spec.StoredName, signature, info.GetName())
		}
	}
	return nil
}

// Load loads the SavedModel with tfgo and resolves every stored name to a graph output.
func (Runtime) Load(art *worker.Artifact, modelPath string, threads int) (worker.Session, error) {
	tag := art.ExtraString("tag", "serve")
	options := &tf.SessionOptions{}
	if threads > 0 { // same meaning as the Python tf runner: both TensorFlow thread pools
		config, err := proto.Marshal(&pb.ConfigProto{IntraOpParallelismThreads: int32(threads), InterOpParallelismThreads: int32(threads)})
		if err != nil {
			return nil, err
		}
		options.Config = config
	}
	model, err := loadModel(modelPath, tag, options)
	if err != nil {
		return nil, err
	}
	s := &session{model: model, inputs: map[string]tf.Output{}}
	for _, spec := range art.Inputs {
		out, err := op(model, "input", spec)
		if err != nil {
			return nil, err
		}
		s.inputs[spec.StoredName] = out
	}
	for _, spec := range art.Outputs {
		out, err := op(model, "output", spec)
		if err != nil {
			return nil, err
		}
		s.outputs = append(s.outputs, out)
		s.names = append(s.names, spec.StoredName)
	}
	return s, nil
}

// loadModel calls tfgo.LoadModel, which panics on error, and returns the panic as an error.
func loadModel(path, tag string, options *tf.SessionOptions) (model *tg.Model, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = worker.Errorf(worker.LoadFailed, "SavedModel %s (tag '%s'): %v", path, tag, p)
		}
	}()
	return tg.LoadModel(path, tagSet(tag), options), nil
}

// tagSet splits a tag set as artifact.json writes it, comma-separated ("serve,extra").
func tagSet(tag string) []string {
	var out []string
	for _, t := range strings.Split(tag, ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}

// sameTagSet reports whether two tag sets hold the same tags (a meta graph is chosen by its exact set).
func sameTagSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, t := range b {
		if !slices.Contains(a, t) {
			return false
		}
	}
	return true
}

// op resolves "name:index" (index 0 when absent) with tfgo's Model.Op, which panics when the
// operation does not exist.
func op(model *tg.Model, what string, spec worker.Spec) (out tf.Output, err error) {
	name, index := spec.StoredName, 0
	if i := strings.LastIndexByte(name, ':'); i >= 0 {
		if n, convErr := strconv.Atoi(name[i+1:]); convErr == nil {
			name, index = name[:i], n
		}
	}
	defer func() {
		if p := recover(); p != nil {
			err = worker.Errorf(worker.LoadFailed, "%s '%s': stored_name '%s' is not in the SavedModel graph (%v)", what, spec.Name, spec.StoredName, p)
		}
	}()
	return model.Op(name, index), nil
}

type session struct {
	model   *tg.Model
	inputs  map[string]tf.Output // by stored name
	outputs []tf.Output
	names   []string // stored names of outputs, in order
}

// Prepare makes TensorFlow tensors of the inputs, once per run request, outside the timing.
func (s *session) Prepare(feeds map[string]*worker.Array) (worker.Feeds, error) {
	prepared := feedMap{}
	for name, arr := range feeds {
		if strs, ok := arr.Data.([]string); ok && arr.DType == "bytes" {
			t, err := StringTensor(arr.Shape, strs)
			if err != nil {
				return nil, worker.Errorf(worker.BadInput, "input %s: %v", name, err)
			}
			prepared[s.inputs[name]] = t
			continue
		}
		dt, ok := tfType(arr.DType)
		if !ok {
			return nil, worker.Errorf(worker.Unsupported, "go-tfgo cannot feed dtype %s", arr.DType)
		}
		t, err := tf.ReadTensor(dt, arr.Shape, bytes.NewReader(arr.Bytes()))
		if err != nil {
			return nil, worker.Errorf(worker.BadInput, "cannot make a %s tensor of shape %v: %v", arr.DType, arr.Shape, err)
		}
		prepared[s.inputs[name]] = t
	}
	return prepared, nil
}

// StringTensor makes a TensorFlow string tensor of any rank from flat C-order elements. The bindings
// cannot reshape a string tensor (TF_TensorBitcastFrom refuses a type without a fixed size), so the
// elements are nested into [][]...string first and tf.NewTensor reads the shape from the nesting; a
// scalar is a plain string. tf.NewTensor infers the shape from the first element of each level, so a
// shape with a zero before its last dimension ([0, 3]) cannot be told apart from [0, 0] and is refused.
func StringTensor(shape []int64, strs []string) (*tf.Tensor, error) {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	if int64(len(strs)) != n {
		return nil, fmt.Errorf("%d strings for shape %v, expected %d", len(strs), shape, n)
	}
	var value any
	if len(shape) == 0 {
		value = strs[0]
	} else {
		value = nest(reflect.ValueOf(strs), shape).Interface()
	}
	t, err := tf.NewTensor(value)
	if err != nil {
		return nil, fmt.Errorf("cannot make a string tensor of shape %v: %v", shape, err)
	}
	if !slices.Equal(t.Shape(), shape) {
		return nil, fmt.Errorf("cannot make an empty string tensor of shape %v: the bindings make it %v (they read the shape from nested slices)", shape, t.Shape())
	}
	return t, nil
}

// nest groups a flat slice by the shape's inner dimensions: [6]string with shape [2, 3] becomes [][]string{{3}, {3}}.
func nest(flat reflect.Value, shape []int64) reflect.Value {
	if len(shape) <= 1 {
		return flat
	}
	inner := int64(1)
	for _, d := range shape[1:] {
		inner *= d
	}
	typ := flat.Type() // []string, then [][]string, ... one level per dimension
	for range shape[1:] {
		typ = reflect.SliceOf(typ)
	}
	out := reflect.MakeSlice(typ, int(shape[0]), int(shape[0]))
	for i := range int(shape[0]) {
		out.Index(i).Set(nest(flat.Slice(int(int64(i)*inner), int(int64(i+1)*inner)), shape[1:]))
	}
	return out
}

// flatten is nest undone: the C-order elements of a string tensor's Value() (a string, []string, [][]string, ...).
func flatten(v reflect.Value, out []string) []string {
	if v.Kind() == reflect.String {
		return append(out, v.String())
	}
	for i := range v.Len() {
		out = flatten(v.Index(i), out)
	}
	return out
}

type feedMap map[tf.Output]*tf.Tensor

// Release does nothing: the bindings free tensors with finalizers.
func (feedMap) Release() {}

// Run is one inference: tfgo's Exec (a panic on error) and Value() on every output, which is the
// copy into Go memory a Go program makes to read a result.
func (s *session) Run(feeds worker.Feeds) (worker.Result, error) {
	tensors := s.model.Exec(s.outputs, feeds.(feedMap))
	values := make([]any, len(tensors))
	for i, t := range tensors {
		values[i] = t.Value()
	}
	return &result{tensors: tensors, values: values, names: s.names}, nil
}

// Close drops the model. tfgo has no Close: its finalizer closes the TensorFlow session, so a
// collection is asked for to give the memory back now.
func (s *session) Close() {
	s.model = nil
	goruntime.GC()
}

type result struct {
	tensors []*tf.Tensor
	values  []any // each tensor's Value(), read in Run: what a string output is written from
	names   []string
}

// Release does nothing: the bindings free tensors with finalizers.
func (r *result) Release() {}

// Outputs copies each tensor's bytes out (WriteContentsTo) into an array for the .npy writer; a
// string tensor, which has no flat byte form, from its Value(), as dtype "bytes" (written as |S<n>).
func (r *result) Outputs() (map[string]*worker.Array, error) {
	out := map[string]*worker.Array{}
	for i, t := range r.tensors {
		if t.DataType() == tf.String {
			out[r.names[i]] = worker.NewArray(append([]int64{}, t.Shape()...), flatten(reflect.ValueOf(r.values[i]), nil))
			continue
		}
		name, ok := dtypes[t.DataType()]
		if !ok {
			return nil, fmt.Errorf("output '%s' has TensorFlow dtype %d, which the worker does not write", r.names[i], t.DataType())
		}
		var buf bytes.Buffer
		if _, err := t.WriteContentsTo(&buf); err != nil {
			return nil, err
		}
		arr, err := worker.ArrayFromBytes(name, t.Shape(), buf.Bytes())
		if err != nil {
			return nil, err
		}
		out[r.names[i]] = arr
	}
	return out, nil
}

func quoted(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = "'" + s + "'"
	}
	return "[" + strings.Join(q, ", ") + "]"
}
