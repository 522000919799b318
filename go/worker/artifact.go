package worker

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
