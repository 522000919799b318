// Package worker is the worker side of the runner protocol (docs/architecture.md, "The runner
// protocol"), mirroring runners/protocol.py: JSON-RPC 2.0, one object per line on stdin/stdout,
// tensors as .npy files, inputs checked against artifact.json, timing with the monotonic clock,
// outputs named by the signature. A runtime implements Runtime and Session; this package does the
// rest. Errors are facts (kind, code, field, expected, got, path, detail:
// harness/schemas/protocol.schema.json); the harness forms the sentence a person reads.
package worker

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"
	"unicode"
)

// ProtocolVersion is the runner protocol version this worker speaks.
const ProtocolVersion = 1

// Error kinds (data.kind of a JSON-RPC error), as harness/schemas/protocol.schema.json lists them.
const (
	BadRequest  = "bad_request"
	LoadFailed  = "load_failed"
	BadInput    = "bad_input"
	Unsupported = "unsupported"
	RunFailed   = "run_failed"
)

// Facts are an error's fields besides kind and code: field, expected, got, path, detail.
type Facts map[string]any

// Error is an error answered to the client: its kind, its code and the code's facts.
type Error struct {
	Kind  string
	Code  string
	Facts Facts
	rpc   int // the JSON-RPC code; 0 means -32000
}

// Error returns the detail (a library's or runtime's own words) where there is one, else the code.
func (e *Error) Error() string {
	if d, ok := e.Facts["detail"].(string); ok {
		return d
	}
	return e.Code
}

// MarshalJSON writes the JSON-RPC error object.
func (e *Error) MarshalJSON() ([]byte, error) {
	data := Facts{"kind": e.Kind, "code": e.Code}
	maps.Copy(data, e.Facts)
	code := e.rpc
	if code == 0 {
		code = -32000
	}
	return json.Marshal(map[string]any{"code": code, "message": e.Error(), "data": data})
}

// Errorf is a runtime's own refusal, in its own words (code runtime_refused, the words its detail).
func Errorf(kind, format string, args ...any) *Error {
	return &Error{Kind: kind, Code: "runtime_refused", Facts: Facts{"detail": fmt.Sprintf(format, args...)}}
}

// Fail makes a protocol error from its facts.
func Fail(kind, code string, facts Facts) *Error {
	return &Error{Kind: kind, Code: code, Facts: facts}
}

func framing(rpc int, code string, facts Facts) *Error {
	return &Error{Kind: BadRequest, Code: code, Facts: facts, rpc: rpc}
}

// Session is a loaded model. Inputs and outputs are keyed by stored name.
type Session interface {
	// Prepare makes the runtime's own input tensors, once per run request, outside the timing.
	Prepare(feeds map[string]*Array) (Feeds, error)
	// Run does one inference, including whatever makes the result readable on the host (tfgo's
	// Tensor.Value(), ONNX Runtime's copy out), since that is what is timed.
	Run(feeds Feeds) (Result, error)
	// Close frees the session.
	Close()
}

// Feeds are prepared input tensors; Release frees them.
type Feeds interface{ Release() }

// Result is what one Run returned. Outputs turns it into arrays keyed by stored name, after
// timing; Release frees what the runtime allocated (called for every result, outside the timing).
type Result interface {
	Outputs() (map[string]*Array, error)
	Release()
}

// Runtime is one runtime a worker serves (go-tfgo, go-ort).
type Runtime interface {
	// Name is the runtime's name in the harness's table of runtimes.
	Name() string
	// Formats lists the artifact formats the runtime loads.
	Formats() []string
	// Versions gives the version of every library the runtime loaded, for info.
	Versions() map[string]string
	// Check verifies, before the load clock starts, that the model file has what artifact.json
	// names (tag, signature, tensor names), so that a mismatch gets a message naming both.
	Check(art *Artifact, modelPath string) error
	// Load readies a session; modelPath is the artifact's main file or folder and exists. load_ns
	// is the time Load takes.
	Load(art *Artifact, modelPath string, threads int) (Session, error)
}

// ModuleVersion tells the version of a Go module linked into this binary, for info's versions.
func ModuleVersion(path string) string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == path {
				if dep.Replace != nil {
					return dep.Replace.Version
				}
				return dep.Version
			}
		}
	}
	return "unknown"
}

type loaded struct {
	session Session
	art     *Artifact
}

// Worker serves the protocol for one runtime.
type Worker struct {
	rt       Runtime
	sessions map[string]*loaded
	counter  int
}

// New makes a worker for a runtime.
func New(rt Runtime) *Worker {
	return &Worker{rt: rt, sessions: map[string]*loaded{}}
}

type response struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  any             `json:"result,omitempty"`
	Error   *Error          `json:"error,omitempty"`
}

var methodNames = []string{"info", "load", "run", "unload", "shutdown"}

func internal(detail string) *Error {
	return &Error{Kind: RunFailed, Code: "internal_error", Facts: Facts{"detail": detail}, rpc: -32603}
}

// Handle answers one request line. It never panics: a panic in a runtime (tfgo panics on every
// error) becomes an error answer, and the worker keeps serving. stop is true after shutdown.
func (w *Worker) Handle(line []byte) (answer []byte, stop bool) {
	resp := response{JSONRPC: "2.0", ID: json.RawMessage("null")}
	result, err := w.dispatch(line, &resp.ID, &stop)
	if err != nil {
		resp.Error = err
	} else {
		resp.Result = result
	}
	out, merr := json.Marshal(resp)
	if merr != nil { // a result that cannot be encoded (NaN in a float): still answer
		out, _ = json.Marshal(response{JSONRPC: "2.0", ID: resp.ID, Error: internal(merr.Error())})
	}
	return out, stop
}

func (w *Worker) dispatch(line []byte, id *json.RawMessage, stop *bool) (result any, rerr *Error) {
	defer func() {
		if p := recover(); p != nil {
			fmt.Fprintf(os.Stderr, "panic: %v\n%s", p, debug.Stack())
			result, rerr = nil, internal(fmt.Sprint(p))
		}
	}()
	var req map[string]json.RawMessage
	if err := json.Unmarshal(line, &req); err != nil {
		var v any
		if json.Unmarshal(line, &v) == nil { // valid JSON, not an object
			return nil, framing(-32600, "invalid_request", nil)
		}
		return nil, framing(-32700, "parse_error", Facts{"detail": err.Error()})
	}
	if raw, ok := req["id"]; ok {
		*id = raw
	}
	var version, method string
	if json.Unmarshal(req["jsonrpc"], &version) != nil || version != "2.0" || json.Unmarshal(req["method"], &method) != nil {
		return nil, framing(-32600, "invalid_request", nil)
	}
	if method == "shutdown" {
		*stop = true
		return map[string]any{}, nil
	}
	if !slices.Contains(methodNames, method) {
		return nil, framing(-32601, "unknown_method", Facts{"field": "method", "expected": methodNames, "got": method})
	}
	params := map[string]json.RawMessage{}
	if raw, ok := req["params"]; ok && string(raw) != "null" {
		if json.Unmarshal(raw, &params) != nil {
			return nil, framing(-32602, "invalid_params", Facts{"field": "params", "expected": "object", "got": jsonType(raw)})
		}
	}
	var err error
	switch method {
	case "info":
		result = w.info()
	case "load":
		result, err = w.load(params)
	case "run":
		result, err = w.run(params)
	case "unload":
		result, err = w.unload(params)
	}
	if err != nil {
		var perr *Error
		if !errors.As(err, &perr) {
			perr = Fail(RunFailed, "library_error", Facts{"detail": err.Error()})
		}
		return nil, perr
	}
	return result, nil
}

// Serve reads requests from in and answers on out until shutdown or end of input.
func (w *Worker) Serve(in io.Reader, out io.Writer) error {
	reader := bufio.NewReader(in) // not a Scanner: a request line has no length limit
	for {
		line, err := reader.ReadBytes('\n')
		if len(strings.TrimSpace(string(line))) > 0 {
			answer, stop := w.Handle(line)
			if _, werr := out.Write(append(answer, '\n')); werr != nil {
				return werr
			}
			if stop {
				return nil
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// ProtocolStdout keeps the protocol channel clean, as protocol.py does: the real stdout is kept
// for protocol messages and fd 1 is pointed at stderr, so a C library that prints to stdout (a
// TensorFlow or ONNX Runtime log line) cannot corrupt the framing. Call it before loading anything.
func ProtocolStdout() (*os.File, error) {
	fd, err := syscall.Dup(1)
	if err != nil {
		return nil, err
	}
	if err := syscall.Dup3(2, 1, 0); err != nil {
		return nil, err
	}
	syscall.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), "protocol-stdout"), nil
}

// --- methods ------------------------------------------------------------------------------------

func (w *Worker) info() map[string]any {
	return map[string]any{
		"runtime":  w.rt.Name(),
		"protocol": ProtocolVersion,
		"versions": w.rt.Versions(),
		"devices":  []string{"cpu"},
		"formats":  w.rt.Formats(),
		"pid":      os.Getpid(),
	}
}

func (w *Worker) load(params map[string]json.RawMessage) (any, error) {
	var folder, format string
	if err := param(params, "artifact", &folder, "string"); err != nil {
		return nil, err
	}
	if err := param(params, "format", &format, "string"); err != nil {
		return nil, err
	}
	device := "cpu"
	if err := optional(params, "device", &device, "string"); err != nil {
		return nil, err
	}
	var threads *int
	if err := optional(params, "threads", &threads, "integer"); err != nil {
		return nil, err
	}
	var signature *string
	if err := optional(params, "signature", &signature, "string"); err != nil {
		return nil, err
	}
	if !slices.Contains(w.rt.Formats(), format) {
		return nil, Fail(Unsupported, "format_not_taken", Facts{"field": "format", "expected": w.rt.Formats(), "got": format})
	}
	if device != "cpu" {
		return nil, Fail(Unsupported, "device_not_available", Facts{"field": "device", "expected": []string{"cpu"}, "got": device})
	}
	metaPath := filepath.Join(folder, "artifact.json")
	text, err := os.ReadFile(metaPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil, Fail(LoadFailed, "artifact_missing", Facts{"path": metaPath})
	} else if err != nil {
		return nil, Fail(LoadFailed, "artifact_unreadable", Facts{"path": metaPath, "detail": err.Error()})
	}
	var doc any
	if err := json.Unmarshal(text, &doc); err != nil {
		return nil, Fail(LoadFailed, "artifact_not_json", Facts{"path": metaPath, "detail": err.Error()})
	}
	if t := jsonType(text); t != "object" {
		return nil, Fail(LoadFailed, "artifact_not_object", Facts{"path": metaPath, "expected": "object", "got": t})
	}
	art := &Artifact{} // a field of another type (inputs: 3) is a corrupt artifact too, in the decoder's words
	if err := json.Unmarshal(text, art); err != nil {
		return nil, Fail(LoadFailed, "artifact_not_json", Facts{"path": metaPath, "detail": err.Error()})
	}
	if art.Format != format {
		return nil, Fail(BadRequest, "format_mismatch", Facts{"field": "format", "path": folder, "expected": format, "got": art.Format})
	}
	if art.Status != "ok" {
		return nil, Fail(LoadFailed, "export_failed", Facts{"path": folder, "detail": art.Error})
	}
	if signature != nil && *signature != "" {
		art.Signature = *signature
	} else if art.Signature == "" {
		art.Signature = "serving_default"
	}
	modelPath := filepath.Join(folder, art.Path)
	if _, err := os.Stat(modelPath); err != nil {
		return nil, Fail(LoadFailed, "model_file_missing", Facts{"path": modelPath})
	}
	n := 0
	if threads != nil {
		n = *threads
	}
	if err := guard(LoadFailed, func() error { return w.rt.Check(art, modelPath) }); err != nil {
		return nil, err
	}
	start := time.Now()
	session, err := w.loadSession(art, modelPath, n)
	if err != nil {
		return nil, err
	}
	loadNS := time.Since(start).Nanoseconds()
	w.counter++
	handle := fmt.Sprintf("h%d", w.counter)
	w.sessions[handle] = &loaded{session, art}
	return map[string]any{"handle": handle, "inputs": ioSpecs(art.Inputs), "outputs": ioSpecs(art.Outputs), "load_ns": loadNS}, nil
}

// loadSession turns a panic or a plain error of the runtime into load_failed.
func (w *Worker) loadSession(art *Artifact, modelPath string, threads int) (s Session, err error) {
	defer func() {
		if p := recover(); p != nil {
			s, err = nil, Fail(LoadFailed, "library_error", Facts{"detail": oneLine(fmt.Sprint(p))})
		}
	}()
	s, err = w.rt.Load(art, modelPath, threads)
	var perr *Error
	if err != nil && !errors.As(err, &perr) {
		err = Fail(LoadFailed, "library_error", Facts{"detail": oneLine(err.Error())})
	}
	return s, err
}

func (w *Worker) run(params map[string]json.RawMessage) (any, error) {
	l, err := w.session(params)
	if err != nil {
		return nil, err
	}
	var given map[string]string
	if err := param(params, "inputs", &given, "object"); err != nil {
		return nil, err
	}
	var outputDir string
	if err := param(params, "output_dir", &outputDir, "string"); err != nil {
		return nil, err
	}
	// delay_us, self-tests only: a busy-wait inside each timed call (an injected slowdown).
	warmup, iterations, delayUs := 0, 1, 0
	for _, c := range []struct {
		name string
		dst  *int
	}{{"warmup", &warmup}, {"iterations", &iterations}, {"delay_us", &delayUs}} {
		if err := optional(params, c.name, c.dst, "integer"); err != nil {
			return nil, err
		}
		if *c.dst < 0 {
			return nil, Fail(BadRequest, "out_of_range", Facts{"field": c.name, "expected": map[string]int{"minimum": 0}, "got": *c.dst})
		}
	}
	delay := time.Duration(delayUs) * time.Microsecond
	if err := checkNames(l.art.Inputs, given); err != nil {
		return nil, err
	}
	feeds := map[string]*Array{}
	for _, spec := range l.art.Inputs {
		value, err := readInput(given[spec.Name], spec.Name)
		if err != nil {
			return nil, err
		}
		if err := checkInput(spec, value); err != nil {
			return nil, err
		}
		feeds[spec.StoredName] = value
	}

	var prepared Feeds
	if err := guard(RunFailed, func() (err error) { prepared, err = l.session.Prepare(feeds); return err }); err != nil {
		return nil, err
	}
	defer prepared.Release()

	var samples []int64
	var first int64
	var result Result
	err = guard(RunFailed, func() error {
		// The first call is the cold one; then warmup untimed calls, then the timed samples. Each
		// timed span is one Run: inference plus reading the values out, no file I/O, no IPC.
		start := time.Now()
		r, err := l.session.Run(prepared)
		first = time.Since(start).Nanoseconds()
		if err != nil {
			return err
		}
		result = r
		for range warmup {
			r, err := l.session.Run(prepared)
			if err != nil {
				return err
			}
			r.Release()
		}
		samples = make([]int64, 0, iterations)
		for range iterations {
			start := time.Now()
			r, err := l.session.Run(prepared)
			if delay > 0 {
				for until := time.Now().Add(delay); time.Now().Before(until); {
				}
			}
			samples = append(samples, time.Since(start).Nanoseconds())
			if err != nil {
				return err
			}
			r.Release()
		}
		return nil
	})
	if result != nil {
		defer result.Release()
	}
	if err != nil {
		return nil, err
	}
	arrays, err := result.Outputs()
	if err != nil {
		return nil, Fail(RunFailed, "library_error", Facts{"detail": oneLine(err.Error())})
	}
	if err := os.MkdirAll(outputDir, 0o755); err != nil {
		return nil, Fail(BadRequest, "output_dir_unwritable", Facts{"field": "output_dir", "path": outputDir, "detail": err.Error()})
	}
	outputs := map[string]string{}
	for _, spec := range l.art.Outputs {
		arr, ok := arrays[spec.StoredName]
		if !ok {
			return nil, Fail(RunFailed, "missing_output", Facts{"field": "outputs." + spec.Name, "expected": spec.StoredName, "got": slices.Collect(maps.Keys(arrays))})
		}
		path := filepath.Join(outputDir, safeName(spec.Name)+".npy")
		if err := WriteNpy(path, arr); err != nil {
			return nil, Fail(RunFailed, "output_unwritable", Facts{"field": "outputs." + spec.Name, "path": path, "detail": err.Error()})
		}
		outputs[spec.Name] = path
	}
	return map[string]any{"outputs": outputs, "first_ns": first, "samples_ns": samples, "peak_rss_bytes": PeakRSS()}, nil
}

func (w *Worker) unload(params map[string]json.RawMessage) (any, error) {
	l, err := w.session(params)
	if err != nil {
		return nil, err
	}
	var handle string
	_ = param(params, "handle", &handle, "string")
	delete(w.sessions, handle)
	if err := guard(RunFailed, func() error { l.session.Close(); return nil }); err != nil {
		return nil, err
	}
	return map[string]any{}, nil
}

func (w *Worker) session(params map[string]json.RawMessage) (*loaded, error) {
	var handle string
	if err := param(params, "handle", &handle, "string"); err != nil {
		return nil, err
	}
	l, ok := w.sessions[handle]
	if !ok {
		return nil, Fail(BadRequest, "unknown_handle", Facts{"field": "handle", "expected": slices.Collect(maps.Keys(w.sessions)), "got": handle})
	}
	return l, nil
}

// PeakRSS is the peak resident set size of this process's address space in bytes: VmHWM from
// /proc/self/status. getrusage's Maxrss is only the fallback: on Linux it carries over the
// high-water mark of the process that spawned the worker across exec (the harness's, often larger).
func PeakRSS() int64 {
	if data, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				var kib int64
				if _, err := fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), &kib); err == nil {
					return kib * 1024
				}
			}
		}
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return ru.Maxrss * 1024
}

// guard runs f and turns a panic or a plain error into a protocol error of the given kind.
func guard(kind string, f func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = Fail(kind, "library_error", Facts{"detail": oneLine(fmt.Sprint(p))})
		}
	}()
	err = f()
	var perr *Error
	if err != nil && !errors.As(err, &perr) {
		err = Fail(kind, "library_error", Facts{"detail": oneLine(err.Error())})
	}
	return err
}

// --- input checks -------------------------------------------------------------------------------

func checkNames(specs []Spec, given map[string]string) error {
	expected := make([]string, 0, len(specs))
	missing := false
	for _, s := range specs {
		expected = append(expected, s.Name)
		_, ok := given[s.Name]
		missing = missing || !ok
	}
	if !missing && len(given) == len(expected) {
		return nil
	}
	code := "unknown_input"
	if missing {
		code = "missing_input"
	}
	return Fail(BadInput, code, Facts{"field": "inputs", "expected": expected, "got": slices.Collect(maps.Keys(given))})
}

func readInput(path, name string) (*Array, error) {
	arr, err := ReadNpy(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, Fail(BadInput, "input_file_missing", Facts{"field": "inputs." + name, "path": path})
	}
	if err != nil {
		return nil, Fail(BadInput, "input_not_npy", Facts{"field": "inputs." + name, "path": path, "detail": oneLine(err.Error())})
	}
	return arr, nil
}

func checkInput(spec Spec, value *Array) error {
	field := "inputs." + spec.Name
	if value.DType != spec.DType {
		return Fail(BadInput, "wrong_dtype", Facts{"field": field, "expected": spec.DType, "got": value.DType})
	}
	if value.Data == nil {
		return Fail(Unsupported, "dtype_not_read", Facts{"field": field, "got": value.DType})
	}
	if spec.Shape == nil {
		return nil
	}
	want := *spec.Shape
	ok := len(value.Shape) == len(want)
	for i := 0; ok && i < len(want); i++ {
		ok = want[i] == nil || int64(*want[i]) == value.Shape[i]
	}
	if ok {
		return nil
	}
	return Fail(BadInput, "wrong_shape", Facts{"field": field, "expected": want, "got": value.Shape})
}

// --- helpers ------------------------------------------------------------------------------------

// param decodes a required parameter; jsonType is the JSON type it must have.
func param(params map[string]json.RawMessage, name string, dst any, typ string) error {
	raw, ok := params[name]
	if !ok {
		return Fail(BadRequest, "missing_param", Facts{"field": name})
	}
	if string(raw) == "null" || json.Unmarshal(raw, dst) != nil {
		return Fail(BadRequest, "wrong_param_type", Facts{"field": name, "expected": typ, "got": jsonType(raw)})
	}
	return nil
}

// optional decodes a parameter that may be absent or null (then dst keeps its default).
func optional(params map[string]json.RawMessage, name string, dst any, typ string) error {
	raw, ok := params[name]
	if !ok || string(raw) == "null" {
		return nil
	}
	if json.Unmarshal(raw, dst) != nil {
		return Fail(BadRequest, "wrong_param_type", Facts{"field": name, "expected": typ, "got": jsonType(raw)})
	}
	return nil
}

// jsonType names the JSON type of a document ("" if it is not JSON), as the schema does.
func jsonType(raw []byte) string {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return ""
	}
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case float64:
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	}
	return "object"
}

// oneLine joins a multi-line library message into one line. It is never cut: the decisive part of a
// runtime's message is often at its end ("No Op registered for Erfc"), and the harness keeps it whole.
func oneLine(text string) string {
	var parts []string
	for _, p := range strings.Split(text, "\n") {
		if p = strings.TrimSpace(p); p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, " ")
}

// safeName makes an output name usable as a file name, as protocol.py's _safe does.
func safeName(name string) string {
	return strings.Map(func(c rune) rune {
		if unicode.IsLetter(c) || unicode.IsDigit(c) || strings.ContainsRune("-_.", c) {
			return c
		}
		return '_'
	}, name)
}
