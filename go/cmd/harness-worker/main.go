// Command harness-worker is the Go runner of the harness: one process per runtime, speaking the
// runner protocol (JSON-RPC 2.0 lines) on stdin/stdout, logs on stderr.
//
//	harness-worker --runtime go-tfgo
//	harness-worker --runtime go-ort [--ort-lib /path/to/libonnxruntime.so.1.x]
//
// go-ort finds libonnxruntime from --ort-lib, else $HARNESS_ORT_LIB, else the path build.sh
// recorded at build time (the venv's onnxruntime wheel).
package main

import (
	"flag"
	"fmt"
	"os"

	"harness/go/runtimes/ort"
	"harness/go/runtimes/tfgo"
	"harness/go/worker"
)

// defaultORTLib is set by build.sh (-ldflags -X) to the venv's libonnxruntime.so.
var defaultORTLib = ""

func main() {
	runtimeName := flag.String("runtime", "", "runtime to serve: go-tfgo or go-ort")
	ortLib := flag.String("ort-lib", "", "path of libonnxruntime.so for go-ort (default $HARNESS_ORT_LIB, else "+orNone(defaultORTLib)+")")
	flag.Parse()

	// Set aside the protocol channel before any library can print to stdout.
	out, err := worker.ProtocolStdout()
	if err != nil {
		fail("cannot set up the protocol channel: %v", err)
	}

	var rt worker.Runtime
	switch *runtimeName {
	case "go-tfgo":
		rt = tfgo.Runtime{}
	case "go-ort":
		lib := firstOf(*ortLib, os.Getenv("HARNESS_ORT_LIB"), defaultORTLib)
		if lib == "" {
			fail("go-ort needs libonnxruntime.so: pass --ort-lib or set HARNESS_ORT_LIB")
		}
		if _, err := os.Stat(lib); err != nil {
			fail("go-ort: libonnxruntime not found at %s (pass --ort-lib or set HARNESS_ORT_LIB; build.sh records the venv's onnxruntime wheel)", lib)
		}
		r, err := ort.New(lib)
		if err != nil {
			fail("go-ort: %v", err)
		}
		rt = r
	default:
		fail("--runtime must be go-tfgo or go-ort, got %q", *runtimeName)
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
