// Command harness-worker is the Go runner of the harness: one process per runtime, speaking the
// runner protocol (JSON-RPC 2.0 lines) on stdin/stdout, logs on stderr.
//
//	harness-worker --runtime go-tfgo
//	harness-worker --runtime go-ort [--ort-lib /path/to/libonnxruntime.so.1.x]
//
// go-ort finds libonnxruntime from --ort-lib, else $HARNESS_ORT_LIB, else the path build.sh
// recorded at build time (the venv's onnxruntime wheel).
//
// Built with -tags notensorflow (build.sh's harness-worker-ort), the binary serves go-ort only and
// does not link TensorFlow: the full binary maps libtensorflow at start (about 300 MiB resident),
// which go-ort's peak_rss_bytes would otherwise carry.
package main

import (
	"flag"
	"fmt"
	"os"

	"slices"
	"sort"

	"harness/go/runtimes/ort"
	"harness/go/worker"
)

// defaultORTLib is set by build.sh (-ldflags -X) to the venv's libonnxruntime.so.
var defaultORTLib = ""

// runtimes are the runtimes built in, by name; tfgo.go adds go-tfgo unless built without TensorFlow.
var runtimes = map[string]func(ortLib string) (worker.Runtime, error){"go-ort": newORT}

func newORT(ortLib string) (worker.Runtime, error) {
	lib := firstOf(ortLib, os.Getenv("HARNESS_ORT_LIB"), defaultORTLib)
	if lib == "" {
		return nil, fmt.Errorf("go-ort needs libonnxruntime.so: pass --ort-lib or set HARNESS_ORT_LIB")
	}
	if _, err := os.Stat(lib); err != nil {
		return nil, fmt.Errorf("go-ort: libonnxruntime not found at %s (pass --ort-lib or set HARNESS_ORT_LIB; build.sh records the venv's onnxruntime wheel)", lib)
	}
	r, err := ort.New(lib)
	if err != nil {
		return nil, fmt.Errorf("go-ort: %w", err)
	}
	return r, nil
}

func main() {
	names := make([]string, 0, len(runtimes))
	for name := range runtimes {
		names = append(names, name)
	}
	sort.Strings(names)
	runtimeName := flag.String("runtime", "", fmt.Sprintf("runtime to serve: one of %v", names))
	ortLib := flag.String("ort-lib", "", "path of libonnxruntime.so for go-ort (default $HARNESS_ORT_LIB, else "+orNone(defaultORTLib)+")")
	flag.Parse()

	// Set aside the protocol channel before any library can print to stdout.
	out, err := worker.ProtocolStdout()
	if err != nil {
		fail("cannot set up the protocol channel: %v", err)
	}

	if !slices.Contains(names, *runtimeName) {
		fail("--runtime must be one of %v, got %q", names, *runtimeName)
	}
	rt, err := runtimes[*runtimeName](*ortLib)
	if err != nil {
		fail("%v", err)
	}
	if err := worker.New(rt).Serve(os.Stdin, out); err != nil {
		fail("%v", err)
	}
}

func firstOf(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// fail reports on stderr and exits 2: the harness shows the stderr tail of a worker that died.
func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "harness-worker: "+format+"\n", args...)
	os.Exit(2)
}
