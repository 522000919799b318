//go:build !notensorflow

package main

import (
	"harness/go/runtimes/tfgo"
	"harness/go/worker"
)

// go-tfgo links the TensorFlow C library, so it is left out of a build tagged notensorflow.
func init() {
	runtimes["go-tfgo"] = func(string) (worker.Runtime, error) { return tfgo.Runtime{}, nil }
}
