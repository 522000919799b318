package main

// End-to-end tests: the binary build.sh makes, spawned as the harness spawns it, on artifacts the
// harness exported, with real TensorFlow and ONNX Runtime libraries.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"harness/go/internal/testenv"
	"harness/go/worker"
)

// workerPath is the full binary (both runtimes); ortPath the go-ort-only one.
var workerPath, ortPath string

func TestMain(m *testing.M) {
	// build.sh is idempotent: it rebuilds only when a source is newer, so the binary under test
	// is always the current one, and it is the exact file the harness starts.
	build := exec.Command("../../build.sh")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build.sh failed:", err)
		os.Exit(1)
	}
	workerPath, _ = filepath.Abs("../../.build/harness-worker")
	ortPath, _ = filepath.Abs("../../.build/harness-worker-ort")
	os.Exit(m.Run())
}

// skipOrFail skips the test with the reason; under CI=true a piece a test needs (the harness CLI,
// a Docker engine, the base image) must be there, so its absence fails the test with the reason.
// CI is read here, during the test, so that go test's cache keys its results on it (a package
// variable is set before the cache starts watching the environment).
func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf(format+" (CI=true: required, so this fails instead of skipping)", args...)
	}
	t.Skipf(format, args...)
}

// exported is one line of `harness export --json`.
type exported struct {
	Fixture string  `json:"fixture"`
	Format  string  `json:"format"`
	Status  string  `json:"status"`
	Key     string  `json:"key"`
	Dir     string  `json:"dir"`
	Error   *string `json:"error"`
}

// lookup is the memoised answer for one fixture×format: the folder, or why there is none.
type lookup struct{ dir, err string }

var (
	artifactsMu sync.Mutex
	artifacts   = map[[2]string]lookup{}
)

// artifact returns the cache folder of fixture×format as the harness itself finds it (`harness
// export --json`, which exports first when the current cache key has none), so a test never runs
// an artifact left from an older exporter or converter. Each fixture×format is looked up once per
// test process; HARNESS_CACHE is honoured by the CLI.
func artifact(t *testing.T, fixture, format string) string {
	t.Helper()
	harness := filepath.Join(testenv.Venv(), "bin", "harness")
	if _, err := os.Stat(harness); err != nil {
		skipOrFail(t, "no harness CLI at %s to find the %s %s artifact (make setup)", harness, fixture, format)
	}
	artifactsMu.Lock()
	defer artifactsMu.Unlock()
	key := [2]string{fixture, format}
	found, ok := artifacts[key]
	if !ok {
		found = exportArtifact(harness, fixture, format)
		artifacts[key] = found
	}
	if found.err != "" {
		t.Fatal(found.err)
	}
	return found.dir
}

// exportArtifact runs `harness export -f FIXTURE -F FORMAT --json` from the repository root (the
// CLI finds the per-user export cache, or HARNESS_CACHE). TensorFlow's noise on stderr is shown only on failure.
func exportArtifact(harness, fixture, format string) lookup {
	args := []string{"export", "-f", fixture, "-F", format, "--json"}
	what := "harness " + strings.Join(args, " ")
	if cache := os.Getenv("HARNESS_CACHE"); cache != "" { // read here too, so go test's cache keys on it
		what = "HARNESS_CACHE=" + cache + " " + what
	}
	cmd := exec.Command(harness, args...)
	cmd.Dir = testenv.RepoRoot()
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	tail := func() string {
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		return strings.Join(lines[max(0, len(lines)-20):], "\n")
	}
	var found *exported
	for _, line := range strings.Split(stdout.String(), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var a exported
		if err := json.Unmarshal([]byte(line), &a); err != nil {
			return lookup{err: fmt.Sprintf("%s: not a JSON line on stdout: %q\nstderr:\n%s", what, line, tail())}
		}
		if a.Fixture == fixture && a.Format == format {
			found = &a
		}
	}
	switch {
	case found == nil:
		return lookup{err: fmt.Sprintf("%s (%v) printed no artifact for %s %s\nstderr:\n%s", what, runErr, fixture, format, tail())}
	case found.Status != "ok" || runErr != nil:
		reason := "no error given"
		if found.Error != nil {
			reason = *found.Error
		}
		return lookup{err: fmt.Sprintf("%s: %s %s is %s (%v): %s\nstderr:\n%s", what, fixture, format, found.Status, runErr, reason, tail())}
	}
	if _, err := os.Stat(filepath.Join(found.Dir, "artifact.json")); err != nil {
		return lookup{err: fmt.Sprintf("%s answered %s, which has no artifact.json: %v", what, found.Dir, err)}
	}
	return lookup{dir: found.Dir}
}

// client talks to one spawned worker. Every stdout line must be a protocol message.
type client struct {
	t      *testing.T
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
	stderr *strings.Builder
	id     int
}

func start(t *testing.T, runtime string) *client {
	t.Helper()
	return startBinary(t, workerPath, runtime)
}

func startBinary(t *testing.T, binary, runtime string) *client {
	t.Helper()
	return startCommand(t, binary, "--runtime", runtime)
}

func startCommand(t *testing.T, name string, args ...string) *client {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "TF_CPP_MIN_LOG_LEVEL=2")
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	stderr := &strings.Builder{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, cmd: cmd, in: in, out: bufio.NewReader(out), stderr: stderr}
	t.Cleanup(func() {
		_ = in.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("worker exited with %v; stderr:\n%s", err, stderr)
		}
	})
	return c
}

type rpcReply struct {
	ID     int             `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int            `json:"code"`
		Message string         `json:"message"`
		Data    map[string]any `json:"data"`
	} `json:"error"`
}

func (c *client) send(line string) rpcReply {
	c.t.Helper()
	if _, err := io.WriteString(c.in, line+"\n"); err != nil {
		c.t.Fatalf("write: %v; stderr:\n%s", err, c.stderr)
	}
	answer, err := c.out.ReadBytes('\n')
	if err != nil {
		c.t.Fatalf("read: %v; stderr:\n%s", err, c.stderr)
	}
	var reply rpcReply
	if err := json.Unmarshal(answer, &reply); err != nil {
		c.t.Fatalf("not a protocol line on stdout: %q", answer)
	}
	return reply
}

func (c *client) call(method string, params any) rpcReply {
	c.t.Helper()
	c.id++
	req, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": c.id, "method": method, "params": params})
	reply := c.send(string(req))
	if reply.ID != c.id {
		c.t.Fatalf("answer id %d, want %d", reply.ID, c.id)
	}
	return reply
}

// ok calls and decodes the result, failing on an error answer.
func (c *client) ok(method string, params any, result any) {
	c.t.Helper()
	reply := c.call(method, params)
	if reply.Error != nil {
		c.t.Fatalf("%s: %s %v", method, reply.Error.Message, reply.Error.Data)
	}
	if result != nil {
		if err := json.Unmarshal(reply.Result, result); err != nil {
			c.t.Fatal(err)
		}
	}
}

// fact is one of an error's facts as the test wants it.
type fact = map[string]any

// fails calls and checks the error's facts (harness/schemas/protocol.schema.json): each one wanted is
// equal, except the detail (a library's or runtime's own words), which must contain the one wanted.
func (c *client) fails(method string, params any, want fact) {
	c.t.Helper()
	reply := c.call(method, params)
	if reply.Error == nil {
		c.t.Fatalf("%s %v: succeeded, want the error %v", method, params, want)
	}
	for key, w := range want {
		got := reply.Error.Data[key]
		if detail, ok := got.(string); key == "detail" && ok {
			if !strings.Contains(detail, w.(string)) {
				c.t.Errorf("%s: detail %q lacks %q", method, detail, w)
			}
			continue
		}
		if g, w := asJSON(got), asJSON(w); g != w {
			c.t.Errorf("%s: %s is %s, want %s (%v)", method, key, g, w, reply.Error.Data)
		}
	}
}

func asJSON(v any) string {
	out, _ := json.Marshal(v)
	return string(out)
}

type loadResult struct {
	Handle string `json:"handle"`
	LoadNS int64  `json:"load_ns"`
}

type runResult struct {
	Outputs   map[string]string `json:"outputs"`
	FirstNS   int64             `json:"first_ns"`
	SamplesNS []int64           `json:"samples_ns"`
	PeakRSS   int64             `json:"peak_rss_bytes"`
}

func (c *client) load(folder, format string) string {
	c.t.Helper()
	var r loadResult
	c.ok("load", map[string]any{"artifact": folder, "format": format, "device": "cpu", "threads": 1}, &r)
	if r.Handle == "" || r.LoadNS <= 0 {
		c.t.Fatalf("load answered %+v", r)
	}
	return r.Handle
}

func writeNpy(t *testing.T, dir, name string, arr *worker.Array) string {
	t.Helper()
	path := filepath.Join(dir, name+".npy")
	if err := worker.WriteNpy(path, arr); err != nil {
		t.Fatal(err)
	}
	return path
}

func readFloats(t *testing.T, path string) ([]int64, []float32) {
	t.Helper()
	arr, err := worker.ReadNpy(path)
	if err != nil {
		t.Fatal(err)
	}
	data, ok := arr.Data.([]float32)
	if !ok {
		t.Fatalf("%s has dtype %s, want float32", path, arr.DType)
	}
	return arr.Shape, data
}

// runtimeCases lists each runtime with the formats it is tested on.
var runtimeCases = []struct{ name, format string }{
	{"go-tfgo", "savedmodel"}, {"go-ort", "onnx13"}, {"go-ort", "onnx18"},
}

// The go-ort-only binary serves the same protocol and does not map TensorFlow.
func TestORTOnlyBinary(t *testing.T) {
	c := startBinary(t, ortPath, "go-ort")
	var info struct {
		Runtime  string            `json:"runtime"`
		Versions map[string]string `json:"versions"`
	}
	c.ok("info", nil, &info)
	if info.Runtime != "go-ort" || info.Versions["tensorflow"] != "" {
		t.Errorf("info: %+v", info)
	}
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", c.cmd.Process.Pid))
	if err != nil {
		t.Errorf("cannot tell whether the go-ort-only worker maps libtensorflow: %v", err)
	} else if strings.Contains(string(maps), "libtensorflow") {
		t.Errorf("the go-ort-only worker has libtensorflow mapped")
	}
	dir := t.TempDir()
	x := writeNpy(t, dir, "x", worker.NewArray([]int64{2}, []float32{2, 3}))
	handle := c.load(artifact(t, "pow", "onnx18"), "onnx18")
	var r runResult
	c.ok("run", map[string]any{"handle": handle, "inputs": map[string]string{"x": x, "y": x}, "output_dir": dir}, &r)
	if _, got := readFloats(t, r.Outputs["pow_x_y"]); fmt.Sprint(got) != "[4 27]" {
		t.Errorf("pow_x_y = %v", got)
	}
	c.ok("shutdown", nil, nil)
	if other := exec.Command(ortPath, "--runtime", "go-tfgo"); other.Run() == nil {
		t.Errorf("the go-ort-only worker accepted --runtime go-tfgo")
	}
}

func TestInfo(t *testing.T) {
	for _, rt := range []struct{ name, lib, prefix string }{{"go-tfgo", "tensorflow", "2."}, {"go-ort", "onnxruntime", "1."}} {
		c := start(t, rt.name)
		var info struct {
			Runtime  string            `json:"runtime"`
			Protocol int               `json:"protocol"`
			Versions map[string]string `json:"versions"`
			Devices  []string          `json:"devices"`
			Formats  []string          `json:"formats"`
			PID      int               `json:"pid"`
		}
		c.ok("info", nil, &info)
		if info.Runtime != rt.name || info.Protocol != 1 || !strings.HasPrefix(info.Versions[rt.lib], rt.prefix) ||
			info.Versions["go"] == "" || len(info.Devices) != 1 || len(info.Formats) == 0 || info.PID != c.cmd.Process.Pid {
			t.Errorf("info: %+v", info)
		}
		c.ok("shutdown", nil, nil)
	}
}

// pow: x**y and y**x are exact for these values, in every runtime.
func TestPow(t *testing.T) {
	dir := t.TempDir()
	x := writeNpy(t, dir, "x", worker.NewArray([]int64{3}, []float32{2, 3, 4}))
	y := writeNpy(t, dir, "y", worker.NewArray([]int64{3}, []float32{3, 2, 0.5}))
	want := map[string][]float32{"pow_x_y": {8, 9, 2}, "pow_y_x": {9, 8, 0.0625}}
	for _, rt := range runtimeCases {
		t.Run(rt.name+"/"+rt.format, func(t *testing.T) {
			c := start(t, rt.name)
			handle := c.load(artifact(t, "pow", rt.format), rt.format)
			out := filepath.Join(dir, rt.name+"-"+rt.format)
			var r runResult
			c.ok("run", map[string]any{"handle": handle, "inputs": map[string]string{"x": x, "y": y}, "output_dir": out, "warmup": 2, "iterations": 5}, &r)
			if r.FirstNS <= 0 || len(r.SamplesNS) != 5 || r.PeakRSS <= 0 {
				t.Errorf("timings: %+v", r)
			}
			for name, values := range want {
				path := r.Outputs[name]
				if path != filepath.Join(out, name+".npy") {
					t.Errorf("output %s at %q", name, path)
				}
				shape, got := readFloats(t, path)
				if len(shape) != 1 || shape[0] != 3 || fmt.Sprint(got) != fmt.Sprint(values) {
					t.Errorf("%s = %v %v, want %v", name, shape, got, values)
				}
			}
			c.ok("unload", map[string]any{"handle": handle}, nil)
			c.fails("run", map[string]any{"handle": handle, "inputs": map[string]string{"x": x, "y": y}, "output_dir": out}, fact{"kind": "bad_request", "code": "unknown_handle", "got": "h1"})
		})
	}
}

// mnist_cnn: the SavedModel in tfgo and its ONNX conversion in ONNX Runtime agree, batch 1 and 3.
func TestMnistAgreesAcrossRuntimes(t *testing.T) {
	dir := t.TempDir()
	for _, batch := range []int64{1, 3} {
		image := make([]float32, batch*28*28)
		for i := range image {
			image[i] = float32((i*7919)%256) / 255
		}
		input := writeNpy(t, dir, fmt.Sprintf("image%d", batch), worker.NewArray([]int64{batch, 28, 28, 1}, image))
		results := map[string][]float32{}
		for _, rt := range runtimeCases {
			c := start(t, rt.name)
			handle := c.load(artifact(t, "mnist_cnn", rt.format), rt.format)
			var r runResult
			c.ok("run", map[string]any{"handle": handle, "inputs": map[string]string{"image": input}, "output_dir": filepath.Join(dir, rt.format), "iterations": 1}, &r)
			shape, got := readFloats(t, r.Outputs["output_0"])
			if len(shape) != 2 || shape[0] != batch || shape[1] != 10 {
				t.Fatalf("%s: output shape %v", rt.format, shape)
			}
			results[rt.format] = got
		}
		for _, format := range []string{"onnx13", "onnx18"} {
			worst := 0.0
			for i, v := range results["savedmodel"] {
				worst = math.Max(worst, math.Abs(float64(v-results[format][i])))
			}
			if worst > 1e-4 {
				t.Errorf("batch %d: %s differs from the SavedModel by %g", batch, format, worst)
			}
		}
	}
}

// Bad input gets the facts protocol.py gives, and the worker keeps serving.
func TestBadInputs(t *testing.T) {
	dir := t.TempDir()
	x := writeNpy(t, dir, "x", worker.NewArray([]int64{3}, []float32{2, 3, 4}))
	x64 := writeNpy(t, dir, "x64", worker.NewArray([]int64{3}, []float64{2, 3, 4}))
	x2d := writeNpy(t, dir, "x2d", worker.NewArray([]int64{2, 2}, []float32{1, 2, 3, 4}))
	corrupt := filepath.Join(dir, "corrupt.npy")
	_ = os.WriteFile(corrupt, []byte("\x93NUMPY garbage"), 0o644)
	missing := filepath.Join(dir, "missing.npy")
	out := filepath.Join(dir, "out")
	for _, rt := range runtimeCases {
		t.Run(rt.name+"/"+rt.format, func(t *testing.T) {
			c := start(t, rt.name)
			h := c.load(artifact(t, "pow", rt.format), rt.format)
			run := func(inputs map[string]string) map[string]any {
				return map[string]any{"handle": h, "inputs": inputs, "output_dir": out}
			}
			c.fails("run", run(map[string]string{"x": x64, "y": x}), fact{"kind": "bad_input", "code": "wrong_dtype", "field": "inputs.x", "expected": "float32", "got": "float64"})
			c.fails("run", run(map[string]string{"x": x2d, "y": x}), fact{"kind": "bad_input", "code": "wrong_shape", "field": "inputs.x", "expected": []any{nil}, "got": []int{2, 2}})
			c.fails("run", run(map[string]string{"x": x}), fact{"kind": "bad_input", "code": "missing_input", "field": "inputs", "got": []string{"x"}})
			c.fails("run", run(map[string]string{"x": x, "y": x, "z": x}), fact{"kind": "bad_input", "code": "unknown_input", "field": "inputs"})
			c.fails("run", run(map[string]string{"x": corrupt, "y": x}), fact{"kind": "bad_input", "code": "input_not_npy", "field": "inputs.x", "path": corrupt})
			c.fails("run", run(map[string]string{"x": x, "y": missing}), fact{"kind": "bad_input", "code": "input_file_missing", "field": "inputs.y", "path": missing})
			c.fails("run", map[string]any{"handle": h, "inputs": map[string]string{"x": x, "y": x}, "output_dir": out, "iterations": -1},
				fact{"kind": "bad_request", "code": "out_of_range", "field": "iterations", "expected": fact{"minimum": 0}, "got": -1})
			c.fails("run", map[string]any{"handle": h, "inputs": map[string]string{"x": x, "y": x}}, fact{"kind": "bad_request", "code": "missing_param", "field": "output_dir"})
			var r runResult // still serving
			c.ok("run", run(map[string]string{"x": x, "y": x}), &r)
			if _, got := readFloats(t, r.Outputs["pow_x_y"]); fmt.Sprint(got) != "[4 27 256]" {
				t.Errorf("after errors: pow_x_y = %v", got)
			}
		})
	}
}

// copyArtifact copies an artifact folder and lets the test edit its artifact.json.
func copyArtifact(t *testing.T, src string, edit func(map[string]any)) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(filepath.Join(dst, "artifact.json"))
	var meta map[string]any
	if err := json.Unmarshal(raw, &meta); err != nil {
		t.Fatal(err)
	}
	edit(meta)
	raw, _ = json.Marshal(meta)
	if err := os.WriteFile(filepath.Join(dst, "artifact.json"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

func renameInput(stored string) func(map[string]any) {
	return func(m map[string]any) { m["inputs"].([]any)[0].(map[string]any)["stored_name"] = stored }
}

// Bad artifacts: load fails naming what was wrong and what was expected; the worker keeps serving.
func TestBadArtifacts(t *testing.T) {
	t.Run("go-tfgo", func(t *testing.T) {
		pow := artifact(t, "pow", "savedmodel")
		c := start(t, "go-tfgo")
		noServe := copyArtifact(t, pow, func(m map[string]any) { m["extra"] = map[string]any{"tag": "train"} })
		refused := func(detail string) fact {
			return fact{"kind": "load_failed", "code": "runtime_refused", "detail": detail}
		}
		c.fails("load", map[string]any{"artifact": noServe, "format": "savedmodel"}, refused("has no meta graph with tag 'train': expected one of {serve}"))
		c.fails("load", map[string]any{"artifact": pow, "format": "savedmodel", "signature": "predict"},
			fact{"kind": "load_failed", "code": "unknown_signature", "field": "signature", "path": filepath.Join(pow, "saved_model"), "expected": []string{"serving_default"}, "got": "predict"})
		badOp := copyArtifact(t, pow, renameInput("serving_default_nope:0"))
		c.fails("load", map[string]any{"artifact": badOp, "format": "savedmodel"}, refused("input 'x': artifact.json names tensor 'serving_default_nope:0', but signature 'serving_default' has 'serving_default_x:0'"))
		noSigKey := copyArtifact(t, pow, func(m map[string]any) { m["outputs"].([]any)[0].(map[string]any)["name"] = "power" })
		c.fails("load", map[string]any{"artifact": noSigKey, "format": "savedmodel"}, refused("signature 'serving_default' has no output 'power': expected one of ['pow_x_y', 'pow_y_x']"))
		c.fails("load", map[string]any{"artifact": pow, "format": "onnx13"}, fact{"kind": "unsupported", "code": "format_not_taken", "field": "format", "expected": []string{"savedmodel"}, "got": "onnx13"})
		c.load(pow, "savedmodel") // still serving
	})
	t.Run("go-ort", func(t *testing.T) {
		pow := artifact(t, "pow", "onnx13")
		c := start(t, "go-ort")
		badName := copyArtifact(t, pow, renameInput("nope"))
		c.fails("load", map[string]any{"artifact": badName, "format": "onnx13"}, fact{"kind": "load_failed", "code": "runtime_refused", "detail": "has no input 'nope': expected one of ['x', 'y']"})
		corrupt := copyArtifact(t, pow, func(map[string]any) {})
		_ = os.WriteFile(filepath.Join(corrupt, "model.onnx"), []byte("not an onnx model"), 0o644)
		c.fails("load", map[string]any{"artifact": corrupt, "format": "onnx13"}, fact{"kind": "load_failed", "detail": "ONNX model " + filepath.Join(corrupt, "model.onnx")})
		c.fails("load", map[string]any{"artifact": pow, "format": "onnx18"}, fact{"kind": "bad_request", "code": "format_mismatch", "field": "format", "path": pow, "expected": "onnx18", "got": "onnx13"})
		c.fails("load", map[string]any{"artifact": pow, "format": "onnx13", "device": "gpu"}, fact{"kind": "unsupported", "code": "device_not_available", "expected": []string{"cpu"}, "got": "gpu"})
		c.load(pow, "onnx13")
	})
	t.Run("both", func(t *testing.T) {
		c := start(t, "go-ort")
		missing := filepath.Join(t.TempDir(), "nothing")
		c.fails("load", map[string]any{"artifact": missing, "format": "onnx13"}, fact{"kind": "load_failed", "code": "artifact_missing", "path": filepath.Join(missing, "artifact.json")})
		failed := copyArtifact(t, artifact(t, "pow", "onnx13"), func(m map[string]any) { m["status"], m["error"] = "error", "converter crashed" })
		c.fails("load", map[string]any{"artifact": failed, "format": "onnx13"}, fact{"kind": "load_failed", "code": "export_failed", "path": failed, "detail": "converter crashed"})
		gone := copyArtifact(t, artifact(t, "pow", "onnx13"), func(map[string]any) {})
		_ = os.Remove(filepath.Join(gone, "model.onnx"))
		c.fails("load", map[string]any{"artifact": gone, "format": "onnx13"}, fact{"kind": "load_failed", "code": "model_file_missing", "path": filepath.Join(gone, "model.onnx")})
		c.fails("load", map[string]any{"format": "onnx13"}, fact{"kind": "bad_request", "code": "missing_param", "field": "artifact"})
		c.fails("load", map[string]any{"artifact": 3, "format": "onnx13"}, fact{"kind": "bad_request", "code": "wrong_param_type", "field": "artifact", "expected": "string", "got": "number"})
	})
}

// Framing errors are answered with JSON-RPC codes, and the worker keeps serving.
func TestFraming(t *testing.T) {
	c := start(t, "go-ort")
	cases := []struct {
		line string
		code int
		name string
	}{
		{"this is not json", -32700, "parse_error"},
		{`[1, 2]`, -32600, "invalid_request"},
		{`{"jsonrpc": "1.0", "id": 1, "method": "info"}`, -32600, "invalid_request"},
		{`{"jsonrpc": "2.0", "id": 1, "method": "teleport"}`, -32601, "unknown_method"},
		{`{"jsonrpc": "2.0", "id": 1, "method": "load", "params": [1]}`, -32602, "invalid_params"},
	}
	for _, tc := range cases {
		reply := c.send(tc.line)
		if reply.Error == nil || reply.Error.Code != tc.code || reply.Error.Data["kind"] != "bad_request" || reply.Error.Data["code"] != tc.name {
			t.Errorf("%s: got %+v, want code %d, %s", tc.line, reply.Error, tc.code, tc.name)
		}
	}
	var info map[string]any
	c.ok("info", nil, &info)
	keys := make([]string, 0, len(info))
	for k := range info {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if strings.Join(keys, ",") != "devices,formats,pid,protocol,runtime,versions" {
		t.Errorf("info keys %v", keys)
	}
	c.ok("shutdown", nil, nil)
}

// The same worker in a container (docker.sh run), when this machine has a Docker engine and the
// base image; otherwise skipped with the command that sets it up (under CI=true, failed with it).
func TestContainer(t *testing.T) {
	script, _ := filepath.Abs("../../docker.sh")
	if exec.Command(script, "ping").Run() != nil {
		skipOrFail(t, "no Docker engine answers (set up: go/docker.sh all)")
	}
	if exec.Command(script, "has-base").Run() != nil {
		skipOrFail(t, "no base image (set up: go/docker.sh base)")
	}
	if out, err := exec.Command(script, "image").CombinedOutput(); err != nil {
		t.Fatalf("docker.sh image: %v\n%s", err, out)
	}
	scratch := t.TempDir()
	x := writeNpy(t, scratch, "x", worker.NewArray([]int64{2}, []float32{2, 3}))
	for _, rt := range []struct{ name, format string }{{"go-ort", "onnx18"}, {"go-tfgo", "savedmodel"}} {
		pow := artifact(t, "pow", rt.format)
		c := startCommand(t, script, "run", rt.name, filepath.Dir(pow), scratch)
		handle := c.load(pow, rt.format)
		var r runResult
		out := filepath.Join(scratch, rt.name)
		c.ok("run", map[string]any{"handle": handle, "inputs": map[string]string{"x": x, "y": x}, "output_dir": out}, &r)
		if _, got := readFloats(t, r.Outputs["pow_x_y"]); fmt.Sprint(got) != "[4 27]" {
			t.Errorf("%s in a container: pow_x_y = %v", rt.name, got)
		}
		// The artifacts are mounted read-only: nothing can be written there.
		c.fails("run", map[string]any{"handle": handle, "inputs": map[string]string{"x": x, "y": x}, "output_dir": filepath.Join(pow, "out")}, fact{"kind": "bad_request", "code": "output_dir_unwritable", "field": "output_dir"})
		c.ok("shutdown", nil, nil)
	}
}
