// Package worker is the worker side of the runner protocol (../../shared/DESIGN.md, "Runner
// protocol"), mirroring runners/protocol.py: JSON-RPC 2.0, one object per line on stdin/stdout,
// tensors as .npy files, inputs checked against artifact.json, timing with the monotonic clock,
// outputs named by the signature. A runtime implements Runtime and Session; this package does the
// rest, so every Go runtime answers with the same messages as the Python workers.
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
	"sort"
	"strings"
	"syscall"
	"time"
	"unicode"
)

// ProtocolVersion is the runner protocol version this worker speaks.
const ProtocolVersion = 1

// Error kinds (data.kind of a JSON-RPC error), as DESIGN.md lists them.
const (
	BadRequest  = "bad_request"
	LoadFailed  = "load_failed"
	BadInput    = "bad_input"
	Unsupported = "unsupported"
	RunFailed   = "run_failed"
)

// Error is an error answered to the client, with its protocol kind.
type Error struct {
	Kind    string
	Message string
}

// Error returns the message, which is what the client sees.
func (e *Error) Error() string { return e.Message }

// Errorf makes a protocol error of the given kind.
func Errorf(kind, format string, args ...any) *Error {
	return &Error{Kind: kind, Message: fmt.Sprintf(format, args...)}
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

type rpcError struct {
	Code    int            `json:"code"`
	Message string         `json:"message"`
	Data    map[string]any `json:"data"`
}

type response struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  any             `json:"result,omitempty"`
	Error   *rpcError       `json:"error,omitempty"`
}

var methodNames = []string{"info", "load", "run", "unload"}

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
		out, _ = json.Marshal(response{JSONRPC: "2.0", ID: resp.ID, Error: &rpcError{-32603, "internal error: " + merr.Error(), map[string]any{"kind": RunFailed}}})
	}
	return out, stop
}

func (w *Worker) dispatch(line []byte, id *json.RawMessage, stop *bool) (result any, rerr *rpcError) {
	defer func() {
		if p := recover(); p != nil {
			fmt.Fprintf(os.Stderr, "panic: %v\n%s", p, debug.Stack())
			result, rerr = nil, &rpcError{-32603, fmt.Sprintf("internal error: %v", p), map[string]any{"kind": RunFailed}}
		}
	}()
	var req map[string]json.RawMessage
	if err := json.Unmarshal(line, &req); err != nil {
		var v any
		if json.Unmarshal(line, &v) == nil { // valid JSON, not an object
			return nil, &rpcError{-32600, "invalid request: expected a JSON-RPC 2.0 object with a method", map[string]any{"kind": BadRequest}}
		}
		return nil, &rpcError{-32700, "parse error: " + err.Error(), map[string]any{"kind": BadRequest}}
	}
	if raw, ok := req["id"]; ok {
		*id = raw
	}
	var version, method string
	if json.Unmarshal(req["jsonrpc"], &version) != nil || version != "2.0" || json.Unmarshal(req["method"], &method) != nil {
		return nil, &rpcError{-32600, "invalid request: expected a JSON-RPC 2.0 object with a method", map[string]any{"kind": BadRequest}}
	}
	if method == "shutdown" {
		*stop = true
		return map[string]any{}, nil
	}
	if !slices.Contains(methodNames, method) {
		return nil, &rpcError{-32601, fmt.Sprintf("unknown method %s: expected one of %s", pyRepr(method), pyList(append(slices.Clone(methodNames), "shutdown"))), map[string]any{"kind": BadRequest}}
	}
	params := map[string]json.RawMessage{}
	if raw, ok := req["params"]; ok && string(raw) != "null" {
		if json.Unmarshal(raw, &params) != nil {
			return nil, &rpcError{-32602, "params must be an object", map[string]any{"kind": BadRequest}}
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
			perr = &Error{Kind: RunFailed, Message: err.Error()}
		}
		return nil, &rpcError{-32000, perr.Message, map[string]any{"kind": perr.Kind}}
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
	if err := param(params, "artifact", &folder, "str"); err != nil {
		return nil, err
	}
	if err := param(params, "format", &format, "str"); err != nil {
		return nil, err
	}
	device := "cpu"
	if err := optional(params, "device", &device, "str"); err != nil {
		return nil, err
	}
	var threads *int
	if err := optional(params, "threads", &threads, "int"); err != nil {
		return nil, err
	}
	var signature *string
	if err := optional(params, "signature", &signature, "str"); err != nil {
		return nil, err
	}
	if !slices.Contains(w.rt.Formats(), format) {
		return nil, Errorf(Unsupported, "runtime %s does not load format %s: expected one of %s", w.rt.Name(), pyRepr(format), pyList(w.rt.Formats()))
	}
	if device != "cpu" {
		return nil, Errorf(Unsupported, "runtime %s has no device %s: expected one of ['cpu']", w.rt.Name(), pyRepr(device))
	}
	metaPath := filepath.Join(folder, "artifact.json")
	text, err := os.ReadFile(metaPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil, Errorf(LoadFailed, "missing artifact: %s does not exist", metaPath)
	} else if err != nil {
		return nil, Errorf(LoadFailed, "unreadable artifact: %s (%v)", metaPath, err)
	}
	var doc any
	if err := json.Unmarshal(text, &doc); err != nil {
		return nil, Errorf(LoadFailed, "corrupt artifact: %s is not valid JSON (%v)", metaPath, err)
	}
	if _, ok := doc.(map[string]any); !ok {
		return nil, Errorf(LoadFailed, "corrupt artifact: %s is not a JSON object (it holds %s)", metaPath, jsonKind(doc))
	}
	art := &Artifact{}
	if err := json.Unmarshal(text, art); err != nil {
		return nil, Errorf(LoadFailed, "corrupt artifact: %s is not valid JSON (%v)", metaPath, err)
	}
	if art.Format != format {
		return nil, Errorf(BadRequest, "artifact %s is format %s, expected %s", folder, pyRepr(art.Format), pyRepr(format))
	}
	if art.Status != "ok" {
		reason := "None"
		if art.Error != nil {
			reason = *art.Error
		}
		return nil, Errorf(LoadFailed, "artifact %s failed to export: %s", folder, reason)
	}
	if signature != nil && *signature != "" {
		art.Signature = *signature
	} else if art.Signature == "" {
		art.Signature = "serving_default"
	}
	modelPath := filepath.Join(folder, art.Path)
	if _, err := os.Stat(modelPath); err != nil {
		return nil, Errorf(LoadFailed, "missing artifact file: %s does not exist", modelPath)
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
			s, err = nil, Errorf(LoadFailed, "%s", oneLine(fmt.Sprint(p)))
		}
	}()
	s, err = w.rt.Load(art, modelPath, threads)
	var perr *Error
	if err != nil && !errors.As(err, &perr) {
		err = Errorf(LoadFailed, "%s", oneLine(err.Error()))
	}
	return s, err
}

func (w *Worker) run(params map[string]json.RawMessage) (any, error) {
	l, err := w.session(params)
	if err != nil {
		return nil, err
	}
	var given map[string]string
	if err := param(params, "inputs", &given, "dict"); err != nil {
		return nil, err
	}
	var outputDir string
	if err := param(params, "output_dir", &outputDir, "str"); err != nil {
		return nil, err
	}
	warmup, iterations := 0, 1
	if err := optional(params, "warmup", &warmup, "int"); err != nil {
		return nil, err
	}
	if err := optional(params, "iterations", &iterations, "int"); err != nil {
		return nil, err
	}
	if warmup < 0 || iterations < 0 {
		return nil, Errorf(BadRequest, "warmup and iterations must be >= 0, got %d and %d", warmup, iterations)
	}
	// Self-tests only: a busy-wait of delay_us inside each timed call (an injected slowdown).
	delayUs := 0
	if err := optional(params, "delay_us", &delayUs, "int"); err != nil {
		return nil, err
	}
	if delayUs < 0 {
		return nil, Errorf(BadRequest, "delay_us must be >= 0, got %d", delayUs)
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
		return nil, Errorf(RunFailed, "%s", oneLine(err.Error()))
	}
	if err := os.MkdirAll(outputDir, 0o755); err != nil {
		return nil, Errorf(BadRequest, "cannot create output_dir %s: %v", outputDir, err)
	}
	outputs := map[string]string{}
	for _, spec := range l.art.Outputs {
		arr, ok := arrays[spec.StoredName]
		if !ok {
			return nil, Errorf(RunFailed, "runtime returned %s, missing output %s (%s)", pyList(slices.Sorted(maps.Keys(arrays))), pyRepr(spec.StoredName), pyRepr(spec.Name))
		}
		path := filepath.Join(outputDir, safeName(spec.Name)+".npy")
		if err := WriteNpy(path, arr); err != nil {
			return nil, Errorf(RunFailed, "cannot write output %s to %s: %v", pyRepr(spec.Name), path, err)
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
	_ = param(params, "handle", &handle, "str")
	delete(w.sessions, handle)
	if err := guard(RunFailed, func() error { l.session.Close(); return nil }); err != nil {
		return nil, err
	}
	return map[string]any{}, nil
}

func (w *Worker) session(params map[string]json.RawMessage) (*loaded, error) {
	var handle string
	if err := param(params, "handle", &handle, "str"); err != nil {
		return nil, err
	}
	l, ok := w.sessions[handle]
	if !ok {
		return nil, Errorf(BadRequest, "unknown handle %s: expected one of %s", pyRepr(handle), pyList(slices.Sorted(maps.Keys(w.sessions))))
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
			err = Errorf(kind, "%s", oneLine(fmt.Sprint(p)))
		}
	}()
	err = f()
	var perr *Error
	if err != nil && !errors.As(err, &perr) {
		err = Errorf(kind, "%s", oneLine(err.Error()))
	}
	return err
}

// --- input checks, with protocol.py's messages --------------------------------------------------

func checkNames(specs []Spec, given map[string]string) error {
	expected := make([]string, 0, len(specs))
	for _, s := range specs {
		expected = append(expected, s.Name)
	}
	sort.Strings(expected)
	names := slices.Sorted(maps.Keys(given))
	if slices.Equal(names, expected) {
		return nil
	}
	var missing, extra []string
	for _, n := range expected {
		if _, ok := given[n]; !ok {
			missing = append(missing, n)
		}
	}
	for _, n := range names {
		if !slices.Contains(expected, n) {
			extra = append(extra, n)
		}
	}
	msg := fmt.Sprintf("inputs %s do not match the signature: expected %s", pyList(names), pyList(expected))
	if len(missing) > 0 {
		msg += fmt.Sprintf(" (missing %s)", pyList(missing))
	}
	if len(extra) > 0 {
		msg += fmt.Sprintf(" (unknown %s)", pyList(extra))
	}
	return Errorf(BadInput, "%s", msg)
}

func readInput(path, name string) (*Array, error) {
	arr, err := ReadNpy(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, Errorf(BadInput, "input %s: file %s does not exist", pyRepr(name), path)
	}
	if err != nil {
		return nil, Errorf(BadInput, "input %s: %s is not a valid .npy file (%s)", pyRepr(name), path, oneLine(err.Error()))
	}
	return arr, nil
}

func checkInput(spec Spec, value *Array) error {
	if value.DType != spec.DType {
		return Errorf(BadInput, "input %s has dtype %s, expected %s", pyRepr(spec.Name), value.DType, spec.DType)
	}
	if value.Data == nil {
		return Errorf(Unsupported, "input %s has dtype %s, which this worker does not read", pyRepr(spec.Name), value.DType)
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
	dims := make([]string, len(want))
	for i, d := range want {
		dims[i] = "?"
		if d != nil {
			dims[i] = fmt.Sprint(*d)
		}
	}
	have := make([]string, len(value.Shape))
	for i, d := range value.Shape {
		have[i] = fmt.Sprint(d)
	}
	return Errorf(BadInput, "input %s has shape [%s], expected [%s]", pyRepr(spec.Name), strings.Join(have, ", "), strings.Join(dims, ", "))
}

// --- helpers ------------------------------------------------------------------------------------

// param decodes a required parameter; typeName is the Python type protocol.py names in its message.
func param(params map[string]json.RawMessage, name string, dst any, typeName string) error {
	raw, ok := params[name]
	if !ok {
		return Errorf(BadRequest, "missing parameter %s", pyRepr(name))
	}
	if string(raw) == "null" || json.Unmarshal(raw, dst) != nil {
		return Errorf(BadRequest, "parameter %s must be a %s", pyRepr(name), typeName)
	}
	return nil
}

// optional decodes a parameter that may be absent or null (then dst keeps its default).
func optional(params map[string]json.RawMessage, name string, dst any, typeName string) error {
	raw, ok := params[name]
	if !ok || string(raw) == "null" {
		return nil
	}
	if json.Unmarshal(raw, dst) != nil {
		return Errorf(BadRequest, "parameter %s must be a %s", pyRepr(name), typeName)
	}
	return nil
}

// pyRepr quotes a string the way Python's repr does in protocol.py's messages ('x').
func pyRepr(s string) string {
	if strings.Contains(s, "'") && !strings.Contains(s, `"`) {
		return `"` + s + `"`
	}
	return "'" + strings.ReplaceAll(s, "'", `\'`) + "'"
}

// pyList renders a list of strings as Python prints it (['x', 'y']).
func pyList(items []string) string {
	quoted := make([]string, len(items))
	for i, s := range items {
		quoted[i] = pyRepr(s)
	}
	return "[" + strings.Join(quoted, ", ") + "]"
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
