// The runner protocol against the real worker process: framing, every error kind with the same
// messages as the Python workers, and that the worker keeps serving after each error.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { writeNpy } from '../src/npy.js';
import { artifact, scratch, WORKER, WorkerProcess } from '../test_support/helpers.js';

const dir = scratch();
/** @type {WorkerProcess} */
let w;
/** @type {string} */
let pow;

/** A pow input: float32, shape [n]. @param {string} name @param {number[]} values */
function f32(name, values, dtype = 'float32') {
  const path = join(dir, `${name}.npy`);
  const data = dtype === 'float64' ? Float64Array.from(values) : Float32Array.from(values);
  writeNpy(path, { dtype, shape: [values.length], data });
  return path;
}

/** @param {Promise<any>} promise @param {string} kind @param {string|RegExp} message */
async function rejects(promise, kind, message) {
  await assert.rejects(promise, (/** @type {any} */ e) => {
    assert.equal(e.kind, kind, e.message);
    if (typeof message === 'string') assert.equal(e.message, message);
    else assert.match(e.message, message);
    return true;
  });
}

before(() => {
  pow = artifact('pow', 'tfjs_graph');
  w = new WorkerProcess('node-tfjs-cpu');
});
after(() => w.shutdown());

test('info names the runtime, its libraries and formats', async () => {
  const info = await w.call('info');
  assert.equal(info.runtime, 'node-tfjs-cpu');
  assert.equal(info.protocol, 1);
  assert.equal(info.versions['@tensorflow/tfjs'], '4.22.0');
  assert.deepEqual(info.devices, ['cpu']);
  assert.deepEqual(info.formats, ['tfjs_graph', 'tfjs_layers']);
  assert.equal(info.pid, w.proc.pid);
});

test('framing errors are bad_request with JSON-RPC codes', async () => {
  const parse = await w.raw('{not json');
  assert.equal(parse.id, null);
  assert.equal(parse.error.code, -32700);
  assert.equal(parse.error.data.kind, 'bad_request');
  assert.match(parse.error.message, /^parse error: /);

  const invalid = await w.raw(JSON.stringify({ id: 7, method: 'info' }));
  assert.equal(invalid.error.code, -32600);
  assert.equal(invalid.error.message, 'invalid request: expected a JSON-RPC 2.0 object with a method');

  const unknown = await w.request('fly');
  assert.equal(unknown.error.code, -32601);
  assert.equal(unknown.error.message, "unknown method 'fly': expected one of ['info', 'load', 'run', 'unload', 'shutdown']");

  const params = await w.raw(JSON.stringify({ jsonrpc: '2.0', id: 8, method: 'load', params: [1] }));
  assert.equal(params.id, 8);
  assert.equal(params.error.code, -32602);
  assert.equal(params.error.message, 'params must be an object');
});

test('load errors name the thing and what was expected', async () => {
  await rejects(w.call('load', { format: 'tfjs_graph' }), 'bad_request', "missing parameter 'artifact'");
  await rejects(w.call('load', { artifact: 3, format: 'tfjs_graph' }), 'bad_request', "parameter 'artifact' must be a str");
  await rejects(w.call('load', { artifact: pow, format: 'onnx13' }), 'unsupported', "runtime node-tfjs-cpu does not load format 'onnx13': expected one of ['tfjs_graph', 'tfjs_layers']");
  await rejects(w.call('load', { artifact: pow, format: 'tfjs_graph', device: 'gpu' }), 'unsupported', "runtime node-tfjs-cpu has no device 'gpu': expected one of ['cpu']");
  const nowhere = join(dir, 'nowhere');
  await rejects(w.call('load', { artifact: nowhere, format: 'tfjs_graph' }), 'load_failed', `missing artifact: ${nowhere}/artifact.json does not exist`);

  const corrupt = join(dir, 'corrupt');
  mkdirSync(corrupt);
  writeFileSync(join(corrupt, 'artifact.json'), '{"format": ');
  await rejects(w.call('load', { artifact: corrupt, format: 'tfjs_graph' }), 'load_failed', /^corrupt artifact: .*artifact\.json is not valid JSON \(/);

  const meta = JSON.parse(readFileSync(join(pow, 'artifact.json'), 'utf8'));
  /** @param {string} name @param {object} changes @param {boolean} [copyModel] */
  const variant = (name, changes, copyModel = true) => {
    const folder = join(dir, name);
    mkdirSync(folder, { recursive: true });
    if (copyModel) cpSync(join(pow, 'tfjs'), join(folder, 'tfjs'), { recursive: true });
    writeFileSync(join(folder, 'artifact.json'), JSON.stringify({ ...meta, ...changes }));
    return folder;
  };
  const onnx = variant('onnx', { format: 'onnx13' });
  await rejects(w.call('load', { artifact: onnx, format: 'tfjs_graph' }), 'bad_request', `artifact ${onnx} is format 'onnx13', expected 'tfjs_graph'`);
  const failed = variant('failed', { status: 'error', error: 'converter exploded' });
  await rejects(w.call('load', { artifact: failed, format: 'tfjs_graph' }), 'load_failed', `artifact ${failed} failed to export: converter exploded`);
  const empty = variant('empty', {}, false);
  await rejects(w.call('load', { artifact: empty, format: 'tfjs_graph' }), 'load_failed', `missing artifact file: ${empty}/tfjs/model.json does not exist`);

  // A dtype TF.js cannot hold is refused, not cast: never wrong numbers.
  const f64 = variant('f64', { inputs: meta.inputs.map((/** @type {any} */ s) => ({ ...s, dtype: 'float64' })) });
  await rejects(w.call('load', { artifact: f64, format: 'tfjs_graph' }), 'unsupported', "TF.js has no float64 tensors: input 'x' is float64 (it computes in float32, int32, bool only)");
  const i64 = variant('i64', { outputs: meta.outputs.map((/** @type {any} */ s) => ({ ...s, dtype: 'int64' })) });
  await rejects(w.call('load', { artifact: i64, format: 'tfjs_graph' }), 'unsupported', /^TF\.js has no int64 tensors: output 'pow_x_y' is int64/);

  const broken = variant('broken', {});
  writeFileSync(join(broken, 'tfjs', 'model.json'), '{"modelTopology": 12');
  await rejects(w.call('load', { artifact: broken, format: 'tfjs_graph' }), 'load_failed', /^SyntaxError: /);
});

test('run validates inputs like the Python workers', async () => {
  const { handle } = await w.call('load', { artifact: pow, format: 'tfjs_graph' });
  const x = f32('x', [2, 3]);
  const y = f32('y', [3, 2]);
  const out = join(dir, 'out');
  await rejects(w.call('run', { handle: 'h999', inputs: { x, y }, output_dir: out }), 'bad_request', `unknown handle 'h999': expected one of ['${handle}']`);
  await rejects(w.call('run', { handle, inputs: { x }, output_dir: out }), 'bad_input', "inputs ['x'] do not match the signature: expected ['x', 'y'] (missing ['y'])");
  await rejects(w.call('run', { handle, inputs: { x, y, z: y }, output_dir: out }), 'bad_input', "inputs ['x', 'y', 'z'] do not match the signature: expected ['x', 'y'] (unknown ['z'])");
  await rejects(w.call('run', { handle, inputs: { x: f32('x64', [2, 3], 'float64'), y }, output_dir: out }), 'bad_input', "input 'x' has dtype float64, expected float32");
  const square = join(dir, 'square.npy');
  writeNpy(square, { dtype: 'float32', shape: [2, 2], data: new Float32Array(4) });
  await rejects(w.call('run', { handle, inputs: { x: square, y }, output_dir: out }), 'bad_input', "input 'x' has shape [2, 2], expected [?]");
  const missing = join(dir, 'missing.npy');
  await rejects(w.call('run', { handle, inputs: { x: missing, y }, output_dir: out }), 'bad_input', `input 'x': file ${missing} does not exist`);
  const junk = join(dir, 'junk.npy');
  writeFileSync(junk, 'junk');
  await rejects(w.call('run', { handle, inputs: { x: junk, y }, output_dir: out }), 'bad_input', `input 'x': ${junk} is not a valid .npy file (not a .npy file (bad magic))`);
  await rejects(w.call('run', { handle, inputs: { x, y }, output_dir: out, iterations: -1 }), 'bad_request', 'warmup and iterations must be >= 0, got 0 and -1');
  await rejects(w.call('run', { handle, inputs: { x, y } }), 'bad_request', "missing parameter 'output_dir'");

  // ... and still serves: a good run after all those errors.
  const r = await w.call('run', { handle, inputs: { x, y }, output_dir: out, warmup: 2, iterations: 5 });
  assert.deepEqual(Object.keys(r.outputs).sort(), ['pow_x_y', 'pow_y_x']);
  assert.equal(r.outputs.pow_x_y, join(out, 'pow_x_y.npy'));
  assert.equal(r.samples_ns.length, 5);
  assert.ok(r.samples_ns.every((/** @type {number} */ s) => Number.isInteger(s) && s > 0));
  assert.ok(r.first_ns > 0);
  assert.ok(r.peak_rss_bytes > 10 * 2 ** 20);
  const none = await w.call('run', { handle, inputs: { x, y }, output_dir: out, iterations: 0 });
  assert.deepEqual(none.samples_ns, []);

  assert.deepEqual(await w.call('unload', { handle }), {});
  await rejects(w.call('unload', { handle }), 'bad_request', "unknown handle 'h1': expected one of []");
});

test('shutdown answers, then the worker exits 0', async () => {
  const worker = new WorkerProcess('node-tfjs-cpu');
  const response = await worker.request('shutdown');
  assert.deepEqual(response, { jsonrpc: '2.0', id: 1, result: {} });
  assert.deepEqual(await worker.exited, { code: 0, signal: null });
});

test('the end of input ends the worker cleanly', async () => {
  const r = spawnSync(process.execPath, [WORKER, '--runtime', 'node-ort'], { input: '{"jsonrpc":"2.0","id":1,"method":"info"}\n', encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).result.runtime, 'node-ort');
});

test("stdout carries protocol lines only: TF.js's banner goes to stderr", () => {
  const inputs = { x: f32('bx', [2]), y: f32('by', [3]) };
  const requests = [
    ['info', {}],
    ['load', { artifact: pow, format: 'tfjs_graph' }],
    ['run', { handle: 'h1', inputs, output_dir: join(dir, 'banner') }],
    ['shutdown', {}],
  ];
  const input = requests.map(([method, params], id) => JSON.stringify({ jsonrpc: '2.0', id, method, params }) + '\n').join('');
  const r = spawnSync(process.execPath, [WORKER, '--runtime', 'node-tfjs-cpu'], { input, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const answers = r.stdout.trimEnd().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(answers.map((a) => [a.id, a.error]), [[0, undefined], [1, undefined], [2, undefined], [3, undefined]]);
  assert.match(r.stderr, /looks like you are running TensorFlow\.js in Node\.js/);
});

test('an unknown runtime is a usage error', () => {
  const r = spawnSync(process.execPath, [WORKER, '--runtime', 'node-bogus'], { encoding: 'utf8' });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /unknown runtime "node-bogus": expected one of node-tfjs-cpu, /);
  assert.equal(r.stdout, '');
});

test('an unhandled rejection goes to stderr and exits non-zero (the harness records a crash)', async () => {
  const boom = 'data:text/javascript,setTimeout(() => Promise.reject(new Error("boom from test")), 300)';
  const worker = new WorkerProcess('node-tfjs-cpu', ['--import', boom]);
  const { code } = await worker.exited;
  assert.notEqual(code, 0);
  assert.match(worker.stderr, /boom from test/);
});

test('errors read word for word as the Python workers write them', async () => {
  const onnx = artifact('pow', 'onnx13');
  const x = f32('cx', [2, 3]);
  const y = f32('cy', [3, 2]);
  const x64 = f32('cx64', [2, 3], 'float64');
  const square = join(dir, 'csquare.npy');
  writeNpy(square, { dtype: 'float32', shape: [2, 2], data: new Float32Array(4) });
  const out = join(dir, 'cout');
  /** @param {WorkerProcess} worker */
  const answers = async (worker) => {
    const { handle } = await worker.call('load', { artifact: onnx, format: 'onnx13' });
    /** @type {[string, object][]} */
    const requests = [
      ['load', { artifact: onnx, format: 'tfjs_graph' }],
      ['load', { artifact: onnx, format: 'onnx13', device: 'tpu' }],
      ['load', { artifact: join(dir, 'nowhere'), format: 'onnx13' }],
      ['load', { artifact: artifact('pow', 'onnx18'), format: 'onnx13' }],
      ['load', { format: 'onnx13' }],
      ['run', { handle: 'nope', inputs: { x, y }, output_dir: out }],
      ['run', { handle, inputs: { x }, output_dir: out }],
      ['run', { handle, inputs: { x, y, w: x, v: y }, output_dir: out }],
      ['run', { handle, inputs: { x: x64, y }, output_dir: out }],
      ['run', { handle, inputs: { x: square, y }, output_dir: out }],
      ['run', { handle, inputs: { x: join(dir, 'absent.npy'), y }, output_dir: out }],
      ['run', { handle, inputs: { x, y }, output_dir: out, warmup: -2 }],
      ['run', { handle, inputs: 'x', output_dir: out }],
      ['fly', {}],
    ];
    const got = [];
    for (const [method, params] of requests) got.push((await worker.request(method, params)).error);
    got.push((await worker.raw('[1, 2]')).error);
    await worker.shutdown();
    return got;
  };
  const py = new WorkerProcess('python:harness_runners.ort');
  const node = new WorkerProcess('node-ort');
  const [want, got] = await Promise.all([answers(py), answers(node)]);
  // The runtimes' names differ in "runtime X does not load ..." and lists of formats; all else is equal.
  const same = (/** @type {any} */ e) => ({ ...e, message: e.message.replace(/runtime \S+ /, 'runtime R ') });
  assert.deepEqual(got.map(same), want.map(same));
});
