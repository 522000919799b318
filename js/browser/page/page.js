// The browser page of the browser runtimes: loads models and runs them in TF.js (cpu, wasm, webgl,
// webgpu) or ONNX Runtime Web (wasm, webgpu), timed with performance.now() inside the page.
//
// The Node worker (../worker.js) drives this page with Playwright and speaks the runner protocol;
// the page only does what must happen in the browser: fetch the model and the .npy inputs from the
// static server, run, time, and hand the outputs back. Everything is reached through
// `window.harness`; each method answers `{ok: value}` or `{error: "Name: message"}`, so a failure in
// the page arrives in Node as the library's own message, not as a Playwright stack.

import './buffer-shim.js'; // before npy.js: it needs Buffer when it is evaluated
import { parseNpy } from '/src/npy.js';
import { GraphSession, LayersSession } from '/src/runtimes/tfjs_calls.js';

/** @type {any} */
let tf = null;
/** @type {any} */
let ort = null;
/** @type {{library: string, backend: string}|null} */
let active = null;
let ortStarted = false;
/** @type {Map<string, any>} id → session */
const sessions = new Map();

/** @param {string} src */
function loadScript(src) {
  return new Promise((resolve, reject) => {
    const s = document.createElement('script');
    s.src = src;
    s.onload = () => resolve(undefined);
    s.onerror = () => reject(new Error(`could not load script ${src}`));
    document.head.appendChild(s);
  });
}

/** The smallest step performance.now() takes here, in ns (browsers coarsen it: 5 µs when
 * cross-origin isolated, 100 µs otherwise, in Chromium). */
function clockResolutionNs() {
  let smallest = Infinity;
  let last = performance.now();
  const end = last + 25;
  for (;;) {
    const t = performance.now();
    if (t !== last) {
      smallest = Math.min(smallest, t - last);
      last = t;
    }
    if (t > end) break;
  }
  return Math.round(smallest * 1e6);
}

/** What WebGPU this browser offers: the adapter's info, or why there is none. */
async function webgpuAdapter() {
  if (!('gpu' in navigator)) return { available: false, reason: `navigator.gpu is missing (WebGPU is off in this browser; isSecureContext=${isSecureContext})` };
  let adapter;
  try {
    adapter = await /** @type {any} */ (navigator).gpu.requestAdapter();
  } catch (e) {
    return { available: false, reason: `navigator.gpu.requestAdapter() threw ${String(e)}` };
  }
  if (!adapter) return { available: false, reason: 'navigator.gpu.requestAdapter() returned null: the browser has no WebGPU adapter' };
  const info = adapter.info ?? {};
  return {
    available: true,
    vendor: info.vendor ?? '',
    architecture: info.architecture ?? '',
    device: info.device ?? '',
    description: info.description ?? '',
    fallback: Boolean(info.isFallbackAdapter ?? adapter.isFallbackAdapter),
    features: [...adapter.features].sort(),
  };
}

/** WebGL as the browser offers it, independent of any library. */
function webglInfo() {
  const canvas = document.createElement('canvas');
  const gl = canvas.getContext('webgl2') ?? canvas.getContext('webgl');
  if (!gl) return { available: false, reason: 'the browser gives no WebGL context' };
  const debug = gl.getExtension('WEBGL_debug_renderer_info');
  const high = gl.getShaderPrecisionFormat(gl.FRAGMENT_SHADER, gl.HIGH_FLOAT);
  return {
    available: true,
    version: typeof WebGL2RenderingContext !== 'undefined' && gl instanceof WebGL2RenderingContext ? 2 : 1,
    vendor: debug ? gl.getParameter(debug.UNMASKED_VENDOR_WEBGL) : gl.getParameter(gl.VENDOR),
    renderer: debug ? gl.getParameter(debug.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER),
    fragment_highp_float_bits: high ? high.precision : 0,
    color_buffer_float: Boolean(gl.getExtension('EXT_color_buffer_float')),
  };
}

/** The TF.js WebGL flags that decide the precision the backend computes in, as evaluated now. */
const WEBGL_FLAGS = [
  'WEBGL_VERSION', 'WEBGL_RENDER_FLOAT32_CAPABLE', 'WEBGL_RENDER_FLOAT32_ENABLED', 'WEBGL_FORCE_F16_TEXTURES',
  'WEBGL_DOWNLOAD_FLOAT_ENABLED', 'WEBGL_PACK', 'WEBGL_CPU_FORWARD', 'WEBGL_USE_SHAPES_UNIFORMS', 'WEBGL_MAX_TEXTURE_SIZE',
  'WEBGL_CONV_IM2COL', 'WEBGL_EXP_CONV',
];

function webglFlags() {
  /** @type {Record<string, any>} */
  const flags = {};
  for (const f of WEBGL_FLAGS) {
    try {
      flags[f] = tf.env().get(f);
    } catch {
      // a flag this TF.js version does not have
    }
  }
  return flags;
}

/**
 * Start one library on one backend. Answers what the worker reports in `info`: versions, the
 * backend's settings, the clock. A backend that cannot start here answers `unavailable` with the
 * reason (WebGPU without an adapter), which the worker turns into `unsupported` at load.
 * @param {'tfjs'|'ort'} library @param {string} backend @param {Record<string, any>} [flags]  TF.js flags to set first
 */
async function init(library, backend, flags = {}) {
  if (active) throw new Error(`the page already runs ${active.library}/${active.backend}`);
  active = { library, backend };
  /** @type {Record<string, any>} */
  const out = {
    user_agent: navigator.userAgent,
    cross_origin_isolated: globalThis.crossOriginIsolated === true,
    hardware_concurrency: navigator.hardwareConcurrency,
    clock: 'performance.now()',
    clock_resolution_ns: clockResolutionNs(),
    versions: {},
  };
  if (backend === 'webgpu') {
    out.webgpu = await webgpuAdapter();
    if (!out.webgpu.available) {
      out.unavailable = out.webgpu.reason;
      return out;
    }
  }
  if (library === 'tfjs') {
    await loadScript('/lib/tfjs/tf.js');
    tf = /** @type {any} */ (globalThis).tf;
    if (backend === 'wasm') {
      await loadScript('/lib/tfjs-backend-wasm/tf-backend-wasm.js');
      tf.wasm.setWasmPaths('/lib/tfjs-backend-wasm/');
    }
    if (backend === 'webgpu') await loadScript('/lib/tfjs-backend-webgpu/tf-backend-webgpu.js');
    // TF.js flags from the worker's HARNESS_TFJS_FLAGS (e.g. WEBGL_FORCE_F16_TEXTURES), before the
    // backend starts; recorded with the info.
    if (Object.keys(flags).length) {
      tf.env().setFlags(flags);
      out.flags_set = flags;
    }
    if (backend === 'webgl') {
      const gl = webglInfo();
      if (!gl.available) {
        out.unavailable = gl.reason;
        return out;
      }
    }
    if (!(await tf.setBackend(backend))) {
      out.unavailable = `TF.js backend ${backend} failed to initialise in this browser (its message is in the worker log, from the page console)`;
      return out;
    }
    await tf.ready();
    Object.assign(out.versions, Object.fromEntries(Object.entries(tf.version).map(([k, v]) => [`@tensorflow/${k}`, String(v)])));
    if (backend === 'wasm') {
      out.versions['@tensorflow/tfjs-backend-wasm'] = tf.wasm.version_wasm;
      out.wasm = {
        simd: tf.env().getBool('WASM_HAS_SIMD_SUPPORT'),
        threads: tf.env().getBool('WASM_HAS_MULTITHREAD_SUPPORT'),
        thread_count: typeof tf.wasm.getThreadsCount === 'function' ? tf.wasm.getThreadsCount() : null,
      };
    }
    if (backend === 'webgl') {
      out.webgl = { ...webglInfo(), flags: webglFlags() };
      const f = out.webgl.flags;
      // TF.js computes in float32 textures when it can render to them; otherwise (or when forced)
      // in float16 textures, and the shaders' highp float must be IEEE single for float32 too.
      const f32 = f.WEBGL_RENDER_FLOAT32_ENABLED === true && f.WEBGL_FORCE_F16_TEXTURES !== true && out.webgl.fragment_highp_float_bits >= 23;
      out.precision = f32 ? 'float32' : 'float16';
    } else {
      out.precision = 'float32';
    }
    out.readback = backend === 'webgpu' ? 'await data()' : 'dataSync()';
  } else {
    await loadScript('/lib/ort/ort.js');
    ort = /** @type {any} */ (globalThis).ort;
    ort.env.wasm.wasmPaths = '/lib/ort/';
    ort.env.logLevel = 'error';
    out.versions['onnxruntime-web'] = ort.env.versions?.web ?? 'unknown';
    out.versions['onnxruntime-common'] = ort.env.versions?.common ?? 'unknown';
    out.precision = 'float32';
    out.readback = 'await session.run() (outputs on the CPU)';
  }
  return out;
}

/** WebGPU cannot read back synchronously: its outputs come back with `await data()`. */
const readsBackSync = () => active?.backend !== 'webgpu';

/** An ONNX Runtime Web session; outputs come back on the CPU (the default output location). */
class OrtSession {
  /** @param {any} session */
  constructor(session) {
    this.session = session;
    this.outputs = [...session.outputNames];
  }

  /** @param {Record<string, any>} feeds */
  async run(feeds) {
    /** @type {Record<string, any>} */
    const inputs = {};
    for (const [k, a] of Object.entries(feeds)) inputs[k] = new ort.Tensor(a.dtype, a.data, a.shape);
    const out = await this.session.run(inputs, this.outputs);
    /** @type {Record<string, any>} */
    const result = {};
    for (const n of this.outputs) {
      const t = out[n];
      result[n] = { dtype: t.type, shape: [...t.dims], data: t.data };
      t.dispose?.();
    }
    return result;
  }

  close() {
    return this.session.release();
  }
}

/**
 * Load a model from the static server.
 * @param {string} id @param {{format: string, url: string, inputs: string[], outputs: string[], threads: number}} spec
 */
async function load(id, spec) {
  if (!active) throw new Error('the page was not initialised');
  if (active.library === 'tfjs') {
    if (spec.format === 'tfjs_graph') {
      sessions.set(id, new GraphSession(tf, await tf.loadGraphModel(spec.url), spec.outputs, readsBackSync()));
    } else if (spec.format === 'tfjs_layers') {
      sessions.set(id, new LayersSession(tf, await tf.loadLayersModel(spec.url), spec.inputs, spec.outputs, readsBackSync()));
    } else {
      throw new Error(`format ${spec.format} is not a TF.js model`);
    }
  } else {
    const ep = active.backend;
    // The wasm backend starts with the first session and keeps its thread pool for the page's life.
    if (!ortStarted && spec.threads) ort.env.wasm.numThreads = spec.threads;
    ortStarted = true;
    const session = await ort.InferenceSession.create(spec.url, { executionProviders: [ep], graphOptimizationLevel: 'all', logSeverityLevel: 3 });
    sessions.set(id, new OrtSession(session));
  }
  return { numThreads: active.library === 'ort' ? ort.env.wasm.numThreads ?? null : null };
}

/**
 * Fetch the inputs, then: the first call (cold), `warmup` untimed calls, `iterations` timed ones.
 * Each timed call covers making the input tensors, the inference and reading every output back
 * to the host (dataSync, or await data() on WebGPU), as the Node runtimes time it.
 * @param {string} id @param {Record<string, string>} urls  stored name → URL of a .npy file
 * @param {number} warmup @param {number} iterations
 * @param {number} [delayUs]  self-tests only: a busy-wait inside each timed call (an injected slowdown)
 */
async function run(id, urls, warmup, iterations, delayUs = 0) {
  const session = sessions.get(id);
  if (!session) throw new Error(`no model ${id} in the page`);
  /** @type {Record<string, any>} */
  const feeds = {};
  for (const [name, url] of Object.entries(urls)) {
    const response = await fetch(url);
    if (!response.ok) throw new Error(`GET ${url}: ${response.status} ${response.statusText}`);
    feeds[name] = parseNpy(new Uint8Array(await response.arrayBuffer()));
  }
  const once = () => session.run(feeds);
  let start = performance.now();
  let result = once();
  if (result instanceof Promise) result = await result;
  const firstMs = performance.now() - start;
  for (let i = 0; i < warmup; i++) {
    const w = once();
    if (w instanceof Promise) await w;
  }
  const samplesMs = [];
  for (let i = 0; i < iterations; i++) {
    start = performance.now();
    const s = once();
    if (s instanceof Promise) await s;
    if (delayUs) {
      const until = performance.now() + delayUs / 1000;
      while (performance.now() < until);
    }
    samplesMs.push(performance.now() - start);
  }
  return {
    outputs: result,
    first_ms: firstMs,
    samples_ms: samplesMs,
    num_tensors: tf ? tf.memory().numTensors : null,
  };
}

/** @param {string} id */
async function unload(id) {
  const session = sessions.get(id);
  sessions.delete(id);
  await session?.close();
  return {};
}

/** What the browser offers, for `harness doctor` (no library loaded). */
async function probe() {
  return {
    user_agent: navigator.userAgent,
    cross_origin_isolated: globalThis.crossOriginIsolated === true,
    hardware_concurrency: navigator.hardwareConcurrency,
    clock_resolution_ns: clockResolutionNs(),
    webgl: webglInfo(),
    webgpu: await webgpuAdapter(),
  };
}

/** @param {(...a: any[]) => any} fn */
function answer(fn) {
  return async (/** @type {any[]} */ ...args) => {
    try {
      return { ok: await fn(...args) };
    } catch (e) {
      // The class name, as the Node runtimes report it (the page loads the libraries' unminified
      // builds, so TF.js's ValueError is still called that).
      const err = /** @type {any} */ (e);
      const name = err?.constructor?.name && err.constructor.name !== 'Error' ? err.constructor.name : err?.name ?? 'Error';
      return { error: `${name}: ${err?.message ?? String(e)}` };
    }
  };
}

/** @type {any} */ (window).harness = {
  init: answer(init),
  load: answer(load),
  run: answer(run),
  unload: answer(unload),
  probe: answer(probe),
};
document.getElementById('state').textContent = 'ready';
