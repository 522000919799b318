package worker

import (
	"io/fs"
	"path/filepath"
	"strings"
)

// Spec is one input or output of an artifact, as the exporter recorded it in artifact.json.
// Name is the signature's key (what the harness speaks); StoredName is what the format calls the
// tensor (SavedModel: "serving_default_x:0", ONNX: the graph's input name). Runtimes feed and fetch by
// StoredName and never guess it.
type Spec struct {
	Name       string   `json:"name"`
	StoredName string   `json:"stored_name"`
	DType      string   `json:"dtype"`
	Shape      *[]*int  `json:"shape"` // nil: unknown rank; a nil entry: dynamic dimension
	Scale      *float64 `json:"scale"`
	ZeroPoint  *int64   `json:"zero_point"`
}

// Artifact is the part of artifact.json a worker reads.
type Artifact struct {
	Fixture   string         `json:"fixture"`
	Format    string         `json:"format"`
	Status    string         `json:"status"`
	Path      string         `json:"path"`
	Signature string         `json:"signature"`
	Inputs    []Spec         `json:"inputs"`
	Outputs   []Spec         `json:"outputs"`
	Error     *string        `json:"error"`
	Extra     map[string]any `json:"extra"`
}

// ExtraString returns extra[key] when it is a non-empty string, else def (e.g. the SavedModel tag).
func (a *Artifact) ExtraString(key, def string) string {
	if s, ok := a.Extra[key].(string); ok && s != "" {
		return s
	}
	return def
}

// ioSpec is what load answers for each input and output: name, dtype and shape, as in protocol.py.
type ioSpec struct {
	Name  string  `json:"name"`
	DType string  `json:"dtype"`
	Shape *[]*int `json:"shape"`
}

func ioSpecs(specs []Spec) []ioSpec {
	out := make([]ioSpec, 0, len(specs))
	for _, s := range specs {
		out = append(out, ioSpec{s.Name, s.DType, s.Shape})
	}
	return out
}

// inside reports whether path is root or below it (both resolved).
func inside(root, path string) bool {
	return path == root || strings.HasPrefix(path, strings.TrimSuffix(root, string(filepath.Separator))+string(filepath.Separator))
}

// resolve is filepath.EvalSymlinks for a path that may not exist: the deepest existing part
// resolved, the rest appended.
func resolve(path string) string {
	if real, err := filepath.EvalSymlinks(path); err == nil {
		if abs, err := filepath.Abs(real); err == nil {
			return abs
		}
		return real
	}
	parent := filepath.Dir(path)
	if parent == path {
		return path
	}
	return filepath.Join(resolve(parent), filepath.Base(path))
}

func refuse(what, path, real, root string) error {
	return Errorf(LoadFailed, "%s '%s' resolves to %s, outside the artifact folder %s: refused", what, path, real, root)
}

// Contain checks that nothing the artifact names leaves its folder: the model's path (artifact.json
// "path": no absolute path, no ..) and every symbolic link below the folder. It returns the folder,
// resolved. An artifact is data from outside the worker; a link to /etc/passwd is refused before the
// runtime opens anything.
func Contain(art *Artifact, modelPath string) (string, error) {
	rel := art.Path
	if rel == "" {
		rel = "."
	}
	folder := modelPath
	parts := 0
	for _, p := range strings.Split(filepath.ToSlash(rel), "/") {
		if p == ".." || filepath.IsAbs(rel) {
			return "", refuse("artifact path", rel, resolve(modelPath), resolve(filepath.Dir(modelPath)))
		}
		if p != "" && p != "." {
			parts++
		}
	}
	for i := 0; i < parts; i++ {
		folder = filepath.Dir(folder)
	}
	root := resolve(folder)
	if real := resolve(modelPath); !inside(root, real) {
		return "", refuse("artifact path", rel, real, root)
	}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			if target := resolve(p); !inside(root, target) {
				return refuse("link", p, target, root)
			}
		}
		return nil
	})
	if err != nil {
		if _, ok := err.(*Error); ok {
			return "", err
		}
		return "", Errorf(LoadFailed, "artifact folder %s: %v", root, err)
	}
	return root, nil
}

// Inside resolves base/name and returns it when it stays in root (a SavedModel asset, an ONNX
// tensor's external data); an absolute name or one that leads out is refused.
func Inside(root, base, name, what string) (string, error) {
	path := filepath.Join(base, name)
	if filepath.IsAbs(name) {
		path = name
	}
	real := resolve(path)
	if filepath.IsAbs(name) || !inside(root, real) {
		return "", refuse(what, name, real, root)
	}
	return real, nil
}
