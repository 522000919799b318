// The browser runtimes' own pieces, each against something independent: the static server over raw
// HTTP, the page's .npy parsing against NumPy's files and Node's reader, and the browser worker
// (real Chromium, real TF.js and ONNX Runtime Web) against known answers, the TF reference and the
// Node worker's own error messages. Needs Debian's Chromium (`make browser`); without it the
// suites skip with that reason (under CI=true they fail instead).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, test } from 'node:test';
import { chromiumPath, openPage } from '../browser/chromium.js';
import { HEADERS, StaticServer } from '../browser/server.js';
import { readNpy, writeNpy } from '../src/npy.js';
import { artifact, JS_ROOT, python, requirement, scratch, WorkerProcess } from '../test_support/helpers.js';

const dir = scratch();
const CHROMIUM = requirement(existsSync(chromiumPath()), `Chromium is not installed at ${chromiumPath()}: run make browser`);
const BROWSER_WORKER = join(JS_ROOT, 'browser', 'worker.js');

/** GET a raw path (no URL normalisation by the client). @param {string} origin @param {string} path @param {string} [method] */
function get(origin, path, method = 'GET') {
  const { hostname, port } = new URL(origin);
  return new Promise((resolve, reject) => {
    const req = request({ hostname, port, path, method }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** A browser worker and a JSON-RPC client for it (js/browser/worker.js). */
class BrowserWorker {
  /** @param {string} runtime @param {Record<string, string>} [env] */
  constructor(runtime, env = {}) {
    this.proc = spawn(process.execPath, [BROWSER_WORKER, '--runtime', runtime], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    this.stderr = '';
    this.proc.stderr.on('data', (d) => (this.stderr += d));
    /** @type {((line: string|null) => void)[]} */
    this.waiting = [];
    createInterface({ input: this.proc.stdout }).on('line', (line) => this.waiting.shift()?.(line));
    this.exited = new Promise((resolve) => this.proc.on('exit', (code, signal) => resolve({ code, signal })));
    this.exited.then(() => this.waiting.splice(0).forEach((w) => w(null)));
    this.id = 0;
  }

  /** The whole response. @param {string} method @param {object} [params] */
  async request(method, params = {}) {
    const id = ++this.id;
    const line = new Promise((resolve) => this.waiting.push(resolve));
    this.proc.stdin.write(JSON.stringify({ jsonrpc: '2.0', id, method, params }) + '\n');
    const answer = await line;
    if (answer === null) throw new Error(`worker exited; stderr:\n${this.stderr}`);
    return JSON.parse(/** @type {string} */ (answer));
  }

  /** @param {string} method @param {object} [params] */
  async call(method, params) {
    const r = await this.request(method, params);
    if (r.error) throw Object.assign(new Error(r.error.message), { kind: r.error.data?.kind });
    return r.result;
  }

  async shutdown() {
    if (this.proc.exitCode === null) {
      await this.call('shutdown');
      this.proc.stdin.end();
    }
    return this.exited;
  }
}

describe('static server', () => {
  const server = new StaticServer();
  let origin = '';
  const folder = join(dir, 'served');
  before(async () => {
    origin = await server.listen();
    mkdirSync(folder, { recursive: true });
    writeFileSync(join(folder, 'x.txt'), 'hello');
    writeFileSync(join(dir, 'secret.txt'), 'outside the mount');
  });
  after(() => server.close());

  test('listens on 127.0.0.1 and answers with the cross-origin isolation headers', async () => {
    assert.match(origin, /^http:\/\/127\.0\.0\.1:\d+$/);
    /** @type {any} */
    const r = await get(origin, '/page/index.html');
    assert.equal(r.status, 200);
    assert.match(r.body, /importmap/);
    for (const [k, v] of Object.entries(HEADERS)) assert.equal(r.headers[k.toLowerCase()], v, k);
    /** @type {any} */
    const wasm = await get(origin, '/lib/tfjs-backend-wasm/tfjs-backend-wasm-simd.wasm');
    assert.equal(wasm.headers['content-type'], 'application/wasm');
  });

  test('a mounted folder is served under its own prefix, once, and nothing outside it', async () => {
    const prefix = server.mount(folder, 'a');
    assert.equal(server.mount(folder, 'a'), prefix);
    /** @type {any} */
    const ok = await get(origin, `${prefix}x.txt`);
    assert.deepEqual([ok.status, ok.body], [200, 'hello']);
    assert.equal(ok.headers['cross-origin-embedder-policy'], 'require-corp');
    for (const path of [`${prefix}../secret.txt`, `${prefix}..%2fsecret.txt`, `${prefix}%2e%2e/secret.txt`, '/a999/x.txt', '/etc/passwd']) {
      /** @type {any} */
      const r = await get(origin, path);
      assert.ok(r.status >= 400 && r.status < 500, `${path}: ${r.status}`);
      assert.doesNotMatch(r.body, /outside the mount/);
    }
    /** @type {any} */
    const post = await get(origin, `${prefix}x.txt`, 'POST');
    assert.equal(post.status, 405);
  });
});

describe('the page', { skip: CHROMIUM.skip }, () => {
  /** @type {Awaited<ReturnType<typeof openPage>>} */
  let browser;
  before(async () => {
    CHROMIUM.check();
    browser = await openPage();
  });
  after(() => browser?.close());

  test('is cross-origin isolated, so wasm gets threads, with a 5 µs clock', async () => {
    const r = await browser.page.evaluate(() => /** @type {any} */ (window).harness.probe());
    assert.equal(r.ok.cross_origin_isolated, true);
    // Chromium coarsens performance.now() to 5 µs when isolated (100 µs otherwise).
    assert.ok(r.ok.clock_resolution_ns > 0 && r.ok.clock_resolution_ns <= 5000, String(r.ok.clock_resolution_ns));
    assert.equal(r.ok.webgl.available, true);
  });

  test('parses .npy files written by NumPy exactly as Node does (shared npy.js)', async () => {
    const folder = join(dir, 'npy');
    mkdirSync(folder, { recursive: true });
    python(`
import numpy as np
d = ${JSON.stringify(folder)}
np.save(d + '/f32.npy', np.array([[1.5, -2.25, np.nan], [np.inf, 0.0, 1e-30]], dtype=np.float32))
np.save(d + '/f16.npy', np.array([1.0, 65504.0, -0.0], dtype=np.float16))
np.save(d + '/i64.npy', np.array([-(2**62), 7], dtype=np.int64))
np.save(d + '/bool.npy', np.array([True, False, True]))
np.save(d + '/scalar.npy', np.array(3.0, dtype=np.float64))
np.lib.format.write_array(open(d + '/v2.npy', 'wb'), np.arange(6, dtype=np.int32).reshape(2, 3), version=(2, 0))
open(d + '/bad.npy', 'wb').write(open(d + '/f32.npy', 'rb').read()[:-4])
`);
    const prefix = browser.server.mount(folder, 't');
    for (const name of ['f32', 'f16', 'i64', 'bool', 'scalar', 'v2']) {
      const url = browser.server.url(prefix, `${name}.npy`);
      const got = await browser.page.evaluate(async (u) => {
        const { parseNpy } = await import('/src/npy.js');
        const a = parseNpy(new Uint8Array(await (await fetch(u)).arrayBuffer()));
        return { dtype: a.dtype, shape: a.shape, data: [...a.data].map(String) };
      }, url);
      const want = readNpy(join(folder, `${name}.npy`));
      assert.deepEqual(got, { dtype: want.dtype, shape: want.shape, data: [...want.data].map(String) }, name);
    }
    const bad = await browser.page.evaluate(async (u) => {
      const { parseNpy } = await import('/src/npy.js');
      try {
        parseNpy(new Uint8Array(await (await fetch(u)).arrayBuffer()));
        return 'parsed';
      } catch (e) {
        return String(e);
      }
    }, browser.server.url(prefix, 'bad.npy'));
    assert.match(bad, /\.npy data is 20 bytes, expected 24 for float32 of shape \[2, 3\]/);
  });
});

describe('browser worker', { skip: CHROMIUM.skip }, () => {
  const pow = { x: join(dir, 'x.npy'), y: join(dir, 'y.npy') };
  before(() => {
    CHROMIUM.check();
    writeNpy(pow.x, { dtype: 'float32', shape: [4], data: Float32Array.from([2, 3, 0.5, 1.5]) });
    writeNpy(pow.y, { dtype: 'float32', shape: [4], data: Float32Array.from([3, 2, 4, -1]) });
  });

  for (const [runtime, format] of [['browser-tfjs-cpu', 'tfjs_graph'], ['browser-ort-wasm', 'onnx13']]) {
    test(`${runtime}: pow gives the known answer, timed in the page, and refuses bad input as the Node worker does`, async () => {
      const w = new BrowserWorker(runtime);
      const node = new WorkerProcess(runtime.replace('browser-', 'node-').replace('node-ort-wasm', 'node-ort-web'));
      try {
        const info = await w.call('info');
        assert.equal(info.runtime, runtime);
        assert.match(info.versions.chromium, /^\d+\.\d+\.\d+\.\d+$/);
        assert.equal(info.browser.cross_origin_isolated, true);
        assert.equal(info.browser.clock, 'performance.now()');
        assert.ok(info.browser.clock_resolution_ns > 0);
        assert.equal(info.precision, 'float32');

        const { handle, load_ns } = await w.call('load', { artifact: artifact('pow', format), format });
        assert.ok(load_ns > 0);
        const out = join(dir, `${runtime}-pow`);
        const r = await w.call('run', { handle, inputs: pow, output_dir: out, warmup: 2, iterations: 7 });
        assert.deepEqual([...readNpy(r.outputs.pow_x_y).data], [8, 9, 0.0625, Math.fround(1 / 1.5)]);
        assert.deepEqual([...readNpy(r.outputs.pow_y_x).data], [9, 8, 2, NaN]);
        assert.equal(r.samples_ns.length, 7);
        assert.ok(r.first_ns > 0 && r.samples_ns.every((/** @type {number} */ s) => Number.isInteger(s) && s >= 0));
        // Page samples are multiples of the page clock's step (5 µs), which a Node-side clock would not give.
        assert.ok(r.samples_ns.every((/** @type {number} */ s) => s % 1000 === 0), String(r.samples_ns));
        assert.ok(r.peak_rss_bytes > 10 * 2 ** 20, `renderer peak RSS ${r.peak_rss_bytes}`);

        // The same bad requests to the Node worker of the same library: the same facts.
        const nodeHandle = (await node.call('load', { artifact: artifact('pow', format), format })).handle;
        const wrong = join(dir, 'wrong.npy');
        writeNpy(wrong, { dtype: 'int32', shape: [4], data: Int32Array.from([1, 2, 3, 4]) });
        for (const inputs of [{ x: pow.x }, { x: pow.x, y: wrong }, { x: pow.x, y: join(dir, 'missing.npy') }]) {
          const mine = (await w.request('run', { handle, inputs, output_dir: out })).error;
          const theirs = (await node.request('run', { handle: nodeHandle, inputs, output_dir: out })).error;
          assert.equal(mine.data.kind, 'bad_input');
          assert.deepEqual(mine, theirs);
        }
        const unknown = (await w.request('run', { handle: 'h99', inputs: pow, output_dir: out })).error;
        assert.deepEqual(unknown.data, { kind: 'bad_request', code: 'unknown_handle', field: 'handle', expected: ['h1'], got: 'h99' });
        const negative = (await w.request('run', { handle, inputs: pow, output_dir: out, iterations: -1 })).error;
        assert.equal(negative.data.kind, 'bad_request');
        await w.call('unload', { handle });
      } finally {
        await Promise.all([w.shutdown(), node.shutdown()]);
      }
    });
  }

  test('browser-ort-wasm hands back int64 outputs (argmax) as the Node ONNX Runtime does', async () => {
    const w = new BrowserWorker('browser-ort-wasm');
    const node = new WorkerProcess('node-ort');
    try {
      const folder = artifact('argmax', 'onnx13');
      const x = join(dir, 'argmax-x.npy');
      python(`import numpy as np; np.save(${JSON.stringify(x)}, np.random.default_rng(3).standard_normal((3, 8)).astype(np.float32))`);
      const input = JSON.parse(python(`import json; print(json.dumps(json.load(open(${JSON.stringify(join(folder, 'artifact.json'))}))['inputs'][0]['name']))`));
      const a = await w.call('run', { handle: (await w.call('load', { artifact: folder, format: 'onnx13' })).handle, inputs: { [input]: x }, output_dir: join(dir, 'am-b') });
      const b = await node.call('run', { handle: (await node.call('load', { artifact: folder, format: 'onnx13' })).handle, inputs: { [input]: x }, output_dir: join(dir, 'am-n') });
      assert.deepEqual(Object.keys(a.outputs).sort(), Object.keys(b.outputs).sort());
      let int64 = 0;
      for (const k of Object.keys(a.outputs)) {
        const [got, want] = [readNpy(a.outputs[k]), readNpy(b.outputs[k])];
        assert.deepEqual([got.dtype, got.shape], [want.dtype, want.shape], k);
        if (got.dtype === 'int64') {
          int64 += 1;
          assert.deepEqual(got.data, want.data, k); // indices: exactly
        } else {
          // floats: wasm and native kernels may differ in the last bits
          got.data.forEach((v, i) => assert.ok(Math.abs(Number(v) - Number(want.data[i])) <= 1e-5 * (1 + Math.abs(Number(want.data[i]))), `${k}[${i}]`));
        }
      }
      assert.ok(int64 > 0, 'argmax has an int64 output');
    } finally {
      await Promise.all([w.shutdown(), node.shutdown()]);
    }
  });

  test('browser-tfjs-webgl records the WebGL flags in info, and float16 textures when forced', async () => {
    const w = new BrowserWorker('browser-tfjs-webgl');
    const f16 = new BrowserWorker('browser-tfjs-webgl', { HARNESS_TFJS_FLAGS: '{"WEBGL_FORCE_F16_TEXTURES": true}' });
    try {
      const [a, b] = await Promise.all([w.call('info'), f16.call('info')]);
      assert.equal(a.browser.webgl.flags.WEBGL_VERSION, 2);
      assert.equal(a.browser.webgl.flags.WEBGL_RENDER_FLOAT32_ENABLED, true);
      assert.equal(a.browser.webgl.flags.WEBGL_FORCE_F16_TEXTURES, false);
      assert.equal(typeof a.browser.webgl.flags.WEBGL_PACK, 'boolean');
      assert.equal(a.precision, 'float32');
      assert.equal(b.browser.webgl.flags.WEBGL_FORCE_F16_TEXTURES, true);
      assert.deepEqual(b.browser.flags_set, { WEBGL_FORCE_F16_TEXTURES: true });
      assert.equal(b.precision, 'float16');
    } finally {
      await Promise.all([w.shutdown(), f16.shutdown()]);
    }
  });

  test('without a WebGPU adapter the webgpu runtimes answer unsupported with the reason', async () => {
    // --disable-gpu --disable-software-rasterizer: no GPU process, so no adapter (and no WebGL).
    const env = { HARNESS_CHROMIUM_ARGS: '--disable-gpu --disable-software-rasterizer' };
    const w = new BrowserWorker('browser-ort-webgpu', env);
    try {
      const info = await w.call('info');
      assert.equal(info.browser.webgpu.available, false);
      const e = (await w.request('load', { artifact: artifact('pow', 'onnx13'), format: 'onnx13' })).error;
      assert.equal(e.data.kind, 'unsupported');
      assert.match(e.message, /^browser-ort-webgpu is not available in Chromium [\d.]+: navigator\.gpu\.requestAdapter\(\) returned null/);
    } finally {
      await w.shutdown();
    }
  });

  test('an unknown runtime is one line and exit 2', async () => {
    const w = new BrowserWorker('browser-nope');
    const { code } = /** @type {any} */ (await w.exited);
    assert.equal(code, 2);
    assert.equal(w.stderr.trim(), 'unknown runtime "browser-nope": expected one of browser-tfjs-cpu, browser-tfjs-wasm, browser-tfjs-webgl, browser-tfjs-webgpu, browser-ort-wasm, browser-ort-webgpu');
  });
});
