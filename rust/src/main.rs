//! harness-toy-worker: the runner protocol (harness/schemas/protocol.schema.json) in Rust, with a toy
//! runtime (toy.rs). It exists to show what a worker in a new language costs: framing, artifact.json,
//! .npy, timing and errors as facts (the harness forms the sentences), checked by
//! tests/test_protocol_kit.py like every worker.
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;
use toy::{node_name, Graph, Tensor};

mod toy;

const RUNTIME: &str = "rust-toy";
const FORMATS: [&str; 1] = ["tfjs_graph"];
const METHODS: [&str; 5] = ["info", "load", "run", "unload", "shutdown"];

/// An error answered to the client: kind, code and the code's facts (field, expected, got, path, detail).
struct Fail {
    rpc: i64,
    kind: &'static str,
    code: &'static str,
    facts: Value,
}

fn fail(kind: &'static str, code: &'static str, facts: Value) -> Fail {
    Fail { rpc: -32000, kind, code, facts }
}

/// An error of the framing, with its own JSON-RPC code.
fn framing(rpc: i64, code: &'static str, facts: Value) -> Fail {
    Fail { rpc, ..fail("bad_request", code, facts) }
}

/// A runtime's own words (code runtime_refused) or a library's (library_error): the detail.
fn words(kind: &'static str, code: &'static str, detail: impl Into<String>) -> Fail {
    fail(kind, code, json!({ "detail": detail.into() }))
}

type Res<T> = Result<T, Fail>;

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

struct Loaded {
    graph: Graph,
    inputs: Vec<Value>,
    outputs: Vec<Value>,
}

fn read_npy(path: &str) -> Result<(String, Tensor), String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("no .npy magic".into());
    }
    let (len, start) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        (u32::from_le_bytes(bytes.get(8..12).ok_or("header cut short")?.try_into().unwrap()) as usize, 12)
    };
    let header = std::str::from_utf8(bytes.get(start..start + len).ok_or("header cut short")?).map_err(|e| e.to_string())?;
    let descr = header.split("'descr': '").nth(1).and_then(|r| r.split('\'').next()).ok_or("no descr")?;
    let dims = header.split("'shape': (").nth(1).and_then(|r| r.split(')').next()).ok_or("no shape")?;
    if header.contains("'fortran_order': True") {
        return Err("Fortran order".into());
    }
    let shape: Vec<usize> =
        dims.split(',').map(str::trim).filter(|d| !d.is_empty()).map(|d| d.parse().map_err(|_| format!("shape ({dims})"))).collect::<Result<_, _>>()?;
    let dtype = match descr {
        "<f4" => "float32",
        "<f8" => "float64",
        "<f2" => "float16",
        "<i4" => "int32",
        "<i8" => "int64",
        "|b1" => "bool",
        "|u1" => "uint8",
        d => d,
    };
    let body = &bytes[start + len..];
    let n: usize = shape.iter().product();
    let data = if dtype == "float32" && body.len() == 4 * n { body.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect() } else { Vec::new() };
    if dtype == "float32" && data.len() != n {
        return Err(format!("{} data bytes for shape {shape:?}", body.len()));
    }
    Ok((dtype.to_string(), Tensor { shape, data }))
}

fn write_npy(path: &Path, t: &Tensor) -> std::io::Result<()> {
    let dims: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    header.push_str(&" ".repeat(63 - (10 + header.len()) % 64));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(t.data.iter().flat_map(|x| x.to_le_bytes()));
    std::fs::write(path, out)
}

fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap_or("");
    line.split_whitespace().nth(1).and_then(|k| k.parse::<u64>().ok()).unwrap_or(0) * 1024
}

fn param<'a>(params: &'a Map<String, Value>, name: &str, want: &'static str) -> Res<&'a Value> {
    let v = params.get(name).ok_or_else(|| fail("bad_request", "missing_param", json!({ "field": name })))?;
    if json_type(v) != want {
        return Err(fail("bad_request", "wrong_param_type", json!({ "field": name, "expected": want, "got": json_type(v) })));
    }
    Ok(v)
}

fn count(params: &Map<String, Value>, name: &str, default: i64) -> Res<i64> {
    let n = match params.get(name) {
        None | Some(Value::Null) => default,
        Some(v) => v.as_i64().ok_or_else(|| fail("bad_request", "wrong_param_type", json!({ "field": name, "expected": "integer", "got": json_type(v) })))?,
    };
    if n < 0 {
        return Err(fail("bad_request", "out_of_range", json!({ "field": name, "expected": { "minimum": 0 }, "got": n })));
    }
    Ok(n)
}

struct Worker {
    sessions: HashMap<String, Loaded>,
    counter: usize,
}

impl Worker {
    fn load(&mut self, p: &Map<String, Value>) -> Res<Value> {
        let folder = PathBuf::from(param(p, "artifact", "string")?.as_str().unwrap());
        let format = param(p, "format", "string")?.as_str().unwrap();
        let device = p.get("device").and_then(Value::as_str).unwrap_or("cpu");
        if !FORMATS.contains(&format) {
            return Err(fail("unsupported", "format_not_taken", json!({ "field": "format", "expected": FORMATS, "got": format })));
        }
        if device != "cpu" {
            return Err(fail("unsupported", "device_not_available", json!({ "field": "device", "expected": ["cpu"], "got": device })));
        }
        let meta = folder.join("artifact.json");
        let path = meta.display().to_string();
        let text = std::fs::read_to_string(&meta).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => fail("load_failed", "artifact_missing", json!({ "path": path })),
            _ => fail("load_failed", "artifact_unreadable", json!({ "path": path, "detail": e.to_string() })),
        })?;
        let art: Value = serde_json::from_str(&text).map_err(|e| fail("load_failed", "artifact_not_json", json!({ "path": path, "detail": e.to_string() })))?;
        if !art.is_object() {
            return Err(fail("load_failed", "artifact_not_object", json!({ "path": path, "expected": "object", "got": json_type(&art) })));
        }
        let folder_s = folder.display().to_string();
        if art["format"].as_str() != Some(format) {
            return Err(fail("bad_request", "format_mismatch", json!({ "field": "format", "path": folder_s, "expected": format, "got": art["format"] })));
        }
        if art["status"] != "ok" {
            return Err(fail("load_failed", "export_failed", json!({ "path": folder_s, "detail": art["error"] })));
        }
        let model = folder.join(art["path"].as_str().unwrap_or(""));
        if !model.exists() {
            return Err(fail("load_failed", "model_file_missing", json!({ "path": model.display().to_string() })));
        }
        // No path out of the artifact: a link or `..` that leaves the folder is refused.
        if !model.canonicalize().is_ok_and(|m| folder.canonicalize().is_ok_and(|f| m.starts_with(f))) {
            return Err(words(
                "load_failed",
                "runtime_refused",
                format!("artifact path {} resolves outside the artifact folder {folder_s}: refused", model.display()),
            ));
        }
        let start = Instant::now();
        let graph = Graph::load(&model).map_err(|e| match e {
            toy::Refusal::Unreadable(detail) => words("load_failed", "library_error", detail),
            toy::Refusal::Unsupported(detail) => words("unsupported", "runtime_refused", detail),
        })?;
        let load_ns = start.elapsed().as_nanos() as u64;
        let (inputs, outputs) = (art["inputs"].as_array().cloned().unwrap_or_default(), art["outputs"].as_array().cloned().unwrap_or_default());
        if let Some(s) = inputs.iter().chain(&outputs).find(|s| s["dtype"] != "float32") {
            return Err(words(
                "unsupported",
                "runtime_refused",
                format!("the toy runtime computes in float32 only: '{}' is {}", s["name"].as_str().unwrap_or(""), s["dtype"]),
            ));
        }
        self.counter += 1;
        let handle = format!("h{}", self.counter);
        let io = |specs: &[Value]| specs.iter().map(|s| json!({ "name": s["name"], "dtype": s["dtype"], "shape": s["shape"] })).collect::<Vec<_>>();
        let reply = json!({ "handle": handle, "inputs": io(&inputs), "outputs": io(&outputs), "load_ns": load_ns });
        self.sessions.insert(handle, Loaded { graph, inputs, outputs });
        Ok(reply)
    }

    fn session(&self, p: &Map<String, Value>) -> Res<&Loaded> {
        let handle = param(p, "handle", "string")?.as_str().unwrap();
        let known: Vec<&String> = self.sessions.keys().collect();
        self.sessions.get(handle).ok_or_else(|| fail("bad_request", "unknown_handle", json!({ "field": "handle", "expected": known, "got": handle })))
    }

    fn run(&self, p: &Map<String, Value>) -> Res<Value> {
        let loaded = self.session(p)?;
        let given = param(p, "inputs", "object")?.as_object().unwrap();
        let out_dir = PathBuf::from(param(p, "output_dir", "string")?.as_str().unwrap());
        let (warmup, iterations, delay_us) = (count(p, "warmup", 0)?, count(p, "iterations", 1)?, count(p, "delay_us", 0)?);
        let names: Vec<&str> = loaded.inputs.iter().map(|s| s["name"].as_str().unwrap_or("")).collect();
        if given.len() != names.len() || names.iter().any(|n| !given.contains_key(*n)) {
            let code = if names.iter().any(|n| !given.contains_key(*n)) { "missing_input" } else { "unknown_input" };
            return Err(fail("bad_input", code, json!({ "field": "inputs", "expected": names, "got": given.keys().collect::<Vec<_>>() })));
        }
        let mut feeds = HashMap::new();
        for spec in &loaded.inputs {
            let name = spec["name"].as_str().unwrap_or("");
            let field = format!("inputs.{name}");
            let path = given[name]
                .as_str()
                .ok_or_else(|| fail("bad_request", "wrong_param_type", json!({ "field": field, "expected": "string", "got": json_type(&given[name]) })))?;
            if !Path::new(path).exists() {
                return Err(fail("bad_input", "input_file_missing", json!({ "field": field, "path": path })));
            }
            let (dtype, t) = read_npy(path).map_err(|e| fail("bad_input", "input_not_npy", json!({ "field": field, "path": path, "detail": e })))?;
            if dtype != "float32" {
                return Err(fail("bad_input", "wrong_dtype", json!({ "field": field, "expected": "float32", "got": dtype })));
            }
            let want: Vec<Value> = spec["shape"].as_array().cloned().unwrap_or_default();
            if spec["shape"].is_array() && (want.len() != t.shape.len() || want.iter().zip(&t.shape).any(|(w, d)| w.as_u64().is_some_and(|w| w as usize != *d)))
            {
                return Err(fail("bad_input", "wrong_shape", json!({ "field": field, "expected": want, "got": t.shape })));
            }
            feeds.insert(node_name(spec["stored_name"].as_str().unwrap_or("")).to_string(), t);
        }
        let once = || -> Result<Vec<Tensor>, String> {
            let mut memo = HashMap::new();
            loaded.outputs.iter().map(|s| loaded.graph.eval(s["stored_name"].as_str().unwrap_or(""), &feeds, &mut memo)).collect()
        };
        let ran = |r: Result<Vec<Tensor>, String>| r.map_err(|e| words("run_failed", "library_error", e));
        let start = Instant::now();
        let result = ran(once())?;
        let first_ns = start.elapsed().as_nanos() as u64;
        for _ in 0..warmup {
            ran(once())?;
        }
        let mut samples = Vec::new();
        for _ in 0..iterations {
            let start = Instant::now();
            ran(once())?;
            while start.elapsed().as_micros() < delay_us as u128 {}
            samples.push(start.elapsed().as_nanos() as u64);
        }
        std::fs::create_dir_all(&out_dir).map_err(|e| {
            fail("bad_request", "output_dir_unwritable", json!({ "field": "output_dir", "path": out_dir.display().to_string(), "detail": e.to_string() }))
        })?;
        let mut outputs = Map::new();
        for (spec, t) in loaded.outputs.iter().zip(&result) {
            let name = spec["name"].as_str().unwrap_or("");
            let path = out_dir.join(format!("{}.npy", name.replace(|c: char| !(c.is_alphanumeric() || "-_.".contains(c)), "_")));
            write_npy(&path, t).map_err(|e| {
                fail(
                    "run_failed",
                    "output_unwritable",
                    json!({ "field": format!("outputs.{name}"), "path": path.display().to_string(), "detail": e.to_string() }),
                )
            })?;
            outputs.insert(name.to_string(), json!(path.display().to_string()));
        }
        Ok(json!({ "outputs": outputs, "first_ns": first_ns, "samples_ns": samples, "peak_rss_bytes": peak_rss() }))
    }

    /// One request line to its answer, and whether it was shutdown.
    fn handle(&mut self, line: &str) -> (Value, bool) {
        let (mut id, mut stop) = (Value::Null, false);
        let answer = (|| -> Res<Value> {
            let req: Value = serde_json::from_str(line).map_err(|e| framing(-32700, "parse_error", json!({ "detail": e.to_string() })))?;
            let valid = |r: &&Map<String, Value>| r.get("jsonrpc") == Some(&json!("2.0")) && r.contains_key("method");
            let req = req.as_object().filter(valid).ok_or_else(|| framing(-32600, "invalid_request", json!({})))?;
            id = req.get("id").cloned().unwrap_or(Value::Null);
            let method = req["method"].as_str().filter(|m| METHODS.contains(m));
            let method = method.ok_or_else(|| framing(-32601, "unknown_method", json!({ "field": "method", "expected": METHODS, "got": req["method"] })))?;
            let params = match req.get("params") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(p)) => p.clone(),
                Some(p) => return Err(framing(-32602, "invalid_params", json!({ "field": "params", "expected": "object", "got": json_type(p) }))),
            };
            match method {
                "info" => Ok(json!({ "runtime": RUNTIME, "protocol": 1, "versions": { "harness-toy-worker": env!("CARGO_PKG_VERSION") },
                                     "devices": ["cpu"], "formats": FORMATS, "pid": std::process::id() })),
                "load" => self.load(&params),
                "run" => self.run(&params),
                "unload" => self.session(&params).map(|_| ()).map(|_| {
                    self.sessions.remove(params["handle"].as_str().unwrap_or(""));
                    json!({})
                }),
                _ => {
                    stop = true; // shutdown
                    Ok(json!({}))
                }
            }
        })();
        let body = match answer {
            Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
            Err(e) => {
                let mut data = json!({ "kind": e.kind, "code": e.code });
                data.as_object_mut().unwrap().extend(e.facts.as_object().cloned().unwrap_or_default());
                let message = data["detail"].as_str().unwrap_or(e.code).to_string();
                json!({ "jsonrpc": "2.0", "id": id, "error": { "code": e.rpc, "message": message, "data": data } })
            }
        };
        (body, stop)
    }
}

fn main() {
    let mut worker = Worker { sessions: HashMap::new(), counter: 0 };
    let mut out = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        // A bug of the worker answers internal_error, and the worker keeps serving.
        let (answer, stop) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.handle(&line))).unwrap_or_else(|_| {
            let data = json!({ "kind": "run_failed", "code": "internal_error", "detail": "the worker panicked (its stderr says where)" });
            (json!({ "jsonrpc": "2.0", "id": null, "error": { "code": -32603, "message": "internal_error", "data": data } }), false)
        });
        if writeln!(out, "{answer}").and_then(|_| out.flush()).is_err() || stop {
            break;
        }
    }
}
