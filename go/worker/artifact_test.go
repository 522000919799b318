package worker

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestContain: the artifact folder is the boundary; a link, an artifact path or a named file that
// leads out of it is refused with the path, where it leads and the folder.
func TestContain(t *testing.T) {
	dir := t.TempDir()
	art := filepath.Join(dir, "art")
	if err := os.MkdirAll(filepath.Join(art, "model", "assets"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "secret"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	model := filepath.Join(art, "model")
	root, err := Contain(&Artifact{Path: "model"}, model)
	if err != nil {
		t.Fatalf("a clean artifact was refused: %v", err)
	}
	if _, err := Inside(root, filepath.Join(model, "assets"), "vocab.txt", "SavedModel asset"); err != nil {
		t.Fatalf("an asset inside was refused: %v", err)
	}
	for _, name := range []string{"../../../secret", "/etc/passwd"} {
		_, err := Inside(root, filepath.Join(model, "assets"), name, "SavedModel asset")
		if err == nil || !strings.Contains(err.Error(), "outside the artifact folder "+root+": refused") {
			t.Errorf("asset %s: got %v, want a refusal", name, err)
		}
	}
	if _, err := Contain(&Artifact{Path: "../secret"}, filepath.Join(art, "..", "secret")); err == nil ||
		!strings.Contains(err.Error(), "artifact path '../secret'") {
		t.Errorf("artifact path ../secret: got %v, want a refusal", err)
	}
	if err := os.Symlink(filepath.Join(dir, "secret"), filepath.Join(model, "assets", "vocab.txt")); err != nil {
		t.Fatal(err)
	}
	if _, err := Contain(&Artifact{Path: "model"}, model); err == nil ||
		!strings.Contains(err.Error(), "vocab.txt' resolves to "+filepath.Join(dir, "secret")+", outside the artifact folder") {
		t.Errorf("a link out: got %v, want a refusal", err)
	}
}

// TestJSONType: the JSON type load and the parameter checks name, as the protocol schema does.
func TestJSONType(t *testing.T) {
	for text, want := range map[string]string{
		`[1]`: "array", `"x"`: "string", `3`: "number", `-1.5e3`: "number",
		`null`: "null", `true`: "boolean", `false`: "boolean", `{}`: "object", `{"format": `: "",
	} {
		if got := jsonType([]byte(text)); got != want {
			t.Errorf("jsonType(%s) = %q, want %q", text, got, want)
		}
	}
}
