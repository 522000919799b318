// What is the Node worker's own: TF.js's dtype refusals, its banner kept off stdout, exit codes, the
// process's memory. The protocol itself (framing, every error's facts, serving on after each)
// is tests/protocol_kit, run against every worker by tests/test_protocol_kit.py.

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

test('TF.js refuses what it cannot hold and names a broken model file (the rest: tests/protocol_kit)', async () => {
  const meta = JSON.parse(readFileSync(join(pow, 'artifact.json'), 'utf8'));
  /** @param {string} name @param {object} changes @param {boolean} [copyModel] */
  const variant = (name, changes, copyModel = true) => {
    const folder = join(dir, name);
    mkdirSync(folder, { recursive: true });
    if (copyModel) cpSync(join(pow, 'tfjs'), join(folder, 'tfjs'), { recursive: true });
    writeFileSync(join(folder, 'artifact.json'), JSON.stringify({ ...meta, ...changes }));
    return folder;
  };
  const empty = variant('empty', {}, false);
  await assert.rejects(w.call('load', { artifact: empty, format: 'tfjs_graph' }), (/** @type {any} */ e) => {
    assert.deepEqual(e.data, { kind: 'load_failed', code: 'model_file_missing', path: `${empty}/tfjs/model.json` });
    return true;
  });

  // A dtype TF.js cannot hold is refused, not cast: never wrong numbers.
  const f64 = variant('f64', { inputs: meta.inputs.map((/** @type {any} */ s) => ({ ...s, dtype: 'float64' })) });
  await rejects(w.call('load', { artifact: f64, format: 'tfjs_graph' }), 'unsupported', "TF.js has no float64 tensors: input 'x' is float64 (it computes in float32, int32, bool only)");
  const i64 = variant('i64', { outputs: meta.outputs.map((/** @type {any} */ s) => ({ ...s, dtype: 'int64' })) });
  await rejects(w.call('load', { artifact: i64, format: 'tfjs_graph' }), 'unsupported', /^TF\.js has no int64 tensors: output 'pow_x_y' is int64/);

  const broken = variant('broken', {});
  writeFileSync(join(broken, 'tfjs', 'model.json'), '{"modelTopology": 12');
  await rejects(w.call('load', { artifact: broken, format: 'tfjs_graph' }), 'load_failed', /^SyntaxError: /);
});

test('a run reports the Node process memory, and unload frees the handle', async () => {
  const { handle } = await w.call('load', { artifact: pow, format: 'tfjs_graph' });
  const out = join(dir, 'out');
  const r = await w.call('run', { handle, inputs: { x: f32('x', [2, 3]), y: f32('y', [3, 2]) }, output_dir: out, warmup: 2, iterations: 5 });
  assert.equal(r.outputs.pow_x_y, join(out, 'pow_x_y.npy'));
  assert.ok(r.samples_ns.every((/** @type {number} */ s) => Number.isInteger(s) && s > 0));
  assert.ok(r.peak_rss_bytes > 10 * 2 ** 20);
  assert.deepEqual(await w.call('unload', { handle }), {});
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
