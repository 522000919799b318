//! The toy runtime: an interpreter of TF.js graph models (model.json) made of a few element-wise
//! float32 ops, enough for the pow fixture. Real runtimes are libraries; this one is a page.
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

const OPS: [&str; 9] = ["Placeholder", "Identity", "Pow", "AddV2", "Add", "Sub", "Mul", "RealDiv", "Maximum"];

#[derive(Clone)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

struct Node {
    op: String,
    inputs: Vec<String>,
}

/// A TF.js graph model: its nodes by name.
pub struct Graph(HashMap<String, Node>);

/// Why a model does not load: its file is not a model.json, or it has an op the toy does not run.
pub enum Refusal {
    Unreadable(String),
    Unsupported(String),
}

/// The node of a tensor name ("Identity:0" is node Identity's output 0).
pub fn node_name(tensor: &str) -> &str {
    tensor.split(':').next().unwrap_or(tensor)
}

impl Graph {
    /// Evaluates `tensor` from the feeds (by node name), each node once.
    pub fn eval(&self, tensor: &str, feeds: &HashMap<String, Tensor>, memo: &mut HashMap<String, Tensor>) -> Result<Tensor, String> {
        let name = node_name(tensor);
        if let Some(t) = memo.get(name).or_else(|| feeds.get(name)) {
            return Ok(t.clone());
        }
        let node = self.0.get(name).ok_or(format!("no node {name}"))?;
        let args: Vec<Tensor> = node.inputs.iter().filter(|i| !i.starts_with('^')).map(|i| self.eval(i, feeds, memo)).collect::<Result<_, _>>()?;
        let f: fn(f32, f32) -> f32 = match node.op.as_str() {
            "Identity" => |a, _| a,
            "Pow" => f32::powf,
            "AddV2" | "Add" => |a, b| a + b,
            "Sub" => |a, b| a - b,
            "Mul" => |a, b| a * b,
            "RealDiv" => |a, b| a / b,
            "Maximum" => f32::max,
            op => return Err(format!("node {name}: op {op} is not fed")),
        };
        let a = args.first().ok_or(format!("node {name} has no input"))?;
        let b = args.get(1).unwrap_or(a);
        let out = if a.shape == b.shape || b.data.len() == 1 {
            Tensor { shape: a.shape.clone(), data: a.data.iter().enumerate().map(|(i, x)| f(*x, b.data[i % b.data.len()])).collect() }
        } else if a.data.len() == 1 {
            Tensor { shape: b.shape.clone(), data: b.data.iter().map(|y| f(a.data[0], *y)).collect() }
        } else {
            return Err(format!("node {name}: shapes {:?} and {:?} do not broadcast", a.shape, b.shape));
        };
        memo.insert(name.to_string(), out.clone());
        Ok(out)
    }

    /// Reads model.json; refuses a graph with an op the toy does not run.
    pub fn load(model: &Path) -> Result<Graph, Refusal> {
        let text = std::fs::read_to_string(model).map_err(|e| Refusal::Unreadable(format!("{}: {e}", model.display())))?;
        let doc: Value = serde_json::from_str(&text).map_err(|e| Refusal::Unreadable(format!("{}: {e}", model.display())))?;
        let mut graph = HashMap::new();
        for n in doc["modelTopology"]["node"].as_array().into_iter().flatten() {
            let op = n["op"].as_str().unwrap_or("").to_string();
            if !OPS.contains(&op.as_str()) {
                let detail = format!("the toy runtime has no op {op} (it runs {})", OPS.join(", "));
                return Err(Refusal::Unsupported(detail));
            }
            let inputs = n["input"].as_array().into_iter().flatten().filter_map(|i| i.as_str().map(String::from)).collect();
            graph.insert(n["name"].as_str().unwrap_or("").to_string(), Node { op, inputs });
        }
        Ok(Graph(graph))
    }
}
