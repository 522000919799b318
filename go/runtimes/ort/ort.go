// Package ort is the go-ort runtime: ONNX artifacts (onnx13, onnx18) run with
// github.com/yalue/onnxruntime_go, CPU execution provider, on the libonnxruntime.so of the venv's
// onnxruntime wheel, which the binding opens at run time (dlopen), so no link-time flags are needed.
package ort

import (
	"fmt"
	goruntime "runtime"
	"slices"
	"sort"
	"strings"

	onnx "github.com/yalue/onnxruntime_go"

	"harness/go/worker"
)

// Runtime is the go-ort runtime; New makes it once per process, since ONNX Runtime has one
// environment per process.
type Runtime struct{}

// New opens libonnxruntime.so at libPath and creates the ONNX Runtime environment.
func New(libPath string) (*Runtime, error) {
	onnx.SetSharedLibraryPath(libPath)
	if err := onnx.InitializeEnvironment(onnx.WithLogLevelError()); err != nil {
		return nil, fmt.Errorf("cannot start ONNX Runtime from %s: %w", libPath, err)
	}
	return &Runtime{}, nil
}

// Name is the runtime's name in the harness's table.
func (*Runtime) Name() string { return "go-ort" }

// Formats lists the artifact formats go-ort loads.
func (*Runtime) Formats() []string { return []string{"onnx13", "onnx18"} }

// Versions reports the ONNX Runtime library actually loaded and the Go modules linked in.
func (*Runtime) Versions() map[string]string {
	return map[string]string{
		"onnxruntime":    onnx.GetVersion(),
		"onnxruntime_go": worker.ModuleVersion("github.com/yalue/onnxruntime_go"),
		"npyio":          worker.ModuleVersion("codeberg.org/sbinet/npyio"),
		"go":             goruntime.Version(),
	}
}

// Check verifies that the model has every input and output artifact.json names: ONNX Runtime
// itself would only complain at the first run.
func (*Runtime) Check(art *worker.Artifact, modelPath string) error {
	// Links out of the folder are refused here; ONNX Runtime itself refuses external data locations
	// with ../ or an absolute path.
	if _, err := worker.Contain(art, modelPath); err != nil {
		return err
	}
	ins, outs, err := onnx.GetInputOutputInfo(modelPath)
	if err != nil {
		return worker.Errorf(worker.LoadFailed, "ONNX model %s: %v", modelPath, err)
	}
	if err := checkNames("input", modelPath, art.Inputs, ins); err != nil {
		return err
	}
	return checkNames("output", modelPath, art.Outputs, outs)
}

func checkNames(what, path string, specs []worker.Spec, infos []onnx.InputOutputInfo) error {
	var names []string
	for _, info := range infos {
		names = append(names, info.Name)
	}
	for _, spec := range specs {
		if !slices.Contains(names, spec.StoredName) {
			sort.Strings(names)
			return worker.Errorf(worker.LoadFailed, "%s '%s': ONNX model %s has no %s '%s': expected one of ['%s']", what, spec.Name, path, what, spec.StoredName, strings.Join(names, "', '"))
		}
	}
	return nil
}

// Load creates the session. threads has the Python ort runner's meaning: intra-op threads, one
// inter-op thread.
func (*Runtime) Load(art *worker.Artifact, modelPath string, threads int) (worker.Session, error) {
	options, err := onnx.NewSessionOptions()
	if err != nil {
		return nil, err
	}
	defer options.Destroy()
	if threads > 0 {
		if err := options.SetIntraOpNumThreads(threads); err != nil {
			return nil, err
		}
		if err := options.SetInterOpNumThreads(1); err != nil {
			return nil, err
		}
	}
	s := &session{}
	var inNames []string
	for _, spec := range art.Inputs {
		inNames = append(inNames, spec.StoredName)
	}
	for _, spec := range art.Outputs {
		s.outNames = append(s.outNames, spec.StoredName)
	}
	s.inNames = inNames
	s.ort, err = onnx.NewDynamicAdvancedSession(modelPath, inNames, s.outNames, options)
	if err != nil {
		return nil, worker.Errorf(worker.LoadFailed, "ONNX model %s: %v", modelPath, err)
	}
	return s, nil
}

type session struct {
	ort      *onnx.DynamicAdvancedSession
	inNames  []string
	outNames []string
}

type values []onnx.Value

// Release destroys the ONNX Runtime values (they hold C memory the Go GC does not see).
func (v values) Release() {
	for _, t := range v {
		if t != nil {
			t.Destroy()
		}
	}
}

// Prepare wraps each input's Go slice in an ONNX Runtime tensor (no copy), in session order.
func (s *session) Prepare(feeds map[string]*worker.Array) (worker.Feeds, error) {
	inputs := make(values, 0, len(s.inNames))
	for _, name := range s.inNames {
		t, err := tensor(feeds[name])
		if err != nil {
			inputs.Release()
			return nil, err
		}
		inputs = append(inputs, t)
	}
	return inputs, nil
}

func tensor(a *worker.Array) (onnx.Value, error) {
	shape := onnx.NewShape(a.Shape...)
	switch d := a.Data.(type) {
	case []float32:
		return onnx.NewTensor(shape, d)
	case []float64:
		return onnx.NewTensor(shape, d)
	case []int8:
		return onnx.NewTensor(shape, d)
	case []int16:
		return onnx.NewTensor(shape, d)
	case []int32:
		return onnx.NewTensor(shape, d)
	case []int64:
		return onnx.NewTensor(shape, d)
	case []uint8:
		return onnx.NewTensor(shape, d)
	case []uint16:
		return onnx.NewTensor(shape, d)
	case []uint32:
		return onnx.NewTensor(shape, d)
	case []uint64:
		return onnx.NewTensor(shape, d)
	case []bool:
		return onnx.NewTensor(shape, d)
	}
	return nil, worker.Errorf(worker.Unsupported, "go-ort cannot feed dtype %s", a.DType)
}

// Run is one inference. Outputs are left for ONNX Runtime to allocate, and the binding copies
// each into Go memory before returning: that copy is the "reading the result out" that is timed.
func (s *session) Run(feeds worker.Feeds) (worker.Result, error) {
	outputs := make(values, len(s.outNames))
	if err := s.ort.Run(feeds.(values), outputs); err != nil {
		outputs.Release()
		return nil, err
	}
	return &result{values: outputs, names: s.outNames}, nil
}

// Close destroys the ONNX Runtime session.
func (s *session) Close() {
	if s.ort != nil {
		s.ort.Destroy()
		s.ort = nil
	}
}

type result struct {
	values values
	names  []string
}

// Release destroys the output tensors.
func (r *result) Release() { r.values.Release() }

// Outputs turns each output tensor into an array (a copy, since Release frees the tensors).
func (r *result) Outputs() (map[string]*worker.Array, error) {
	out := map[string]*worker.Array{}
	for i, v := range r.values {
		shape := []int64(v.GetShape())
		var data any
		switch t := v.(type) {
		case *onnx.Tensor[float32]:
			data = slices.Clone(t.GetData())
		case *onnx.Tensor[float64]:
			data = slices.Clone(t.GetData())
		case *onnx.Tensor[int8]:
			data = slices.Clone(t.GetData())
		case *onnx.Tensor[int16]:
			data = slices.Clone(t.GetData())
		case *onnx.Tensor[int32]:
			data = slices.Clone(t.GetData())
		case *onnx.Tensor[int64]:
			data = slices.Clone(t.GetData())
		case *onnx.Tensor[uint8]:
			data = slices.Clone(t.GetData())
		case *onnx.Tensor[uint16]:
			data = slices.Clone(t.GetData())
		case *onnx.Tensor[uint32]:
			data = slices.Clone(t.GetData())
		case *onnx.Tensor[uint64]:
			data = slices.Clone(t.GetData())
		case *onnx.Tensor[bool]:
			data = slices.Clone(t.GetData())
		default:
			return nil, fmt.Errorf("output '%s' is an ONNX %v of %v, which the worker does not write", r.names[i], v.GetONNXType(), onnx.TensorElementDataType(v.DataType()))
		}
		out[r.names[i]] = worker.NewArray(slices.Clone(shape), data)
	}
	return out, nil
}
