// Package testenv finds what the Go tests borrow from the harness's Python side: the venv (its
// Python writes and reads .npy files and SavedModels the way the harness does).
package testenv

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// RepoRoot is the harness repository (this file is go/internal/testenv/testenv.go in it).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

// Venv is HARNESS_VENV (go/env.sh sets it), else the repository's .venv.
func Venv() string {
	if v := os.Getenv("HARNESS_VENV"); v != "" {
		return v
	}
	return filepath.Join(RepoRoot(), ".venv")
}

// Python is the venv's Python; without it the test is skipped with the reason.
func Python(t testing.TB) string {
	t.Helper()
	py := filepath.Join(Venv(), "bin", "python")
	if _, err := os.Stat(py); err != nil {
		t.Skipf("no venv Python at %s (make setup): %v", py, err)
	}
	return py
}
