#!/usr/bin/env node
// The browser runner worker: `node js/browser/worker.js --runtime browser-tfjs-webgl` serves one
// browser runtime over the runner protocol, with the same protocol code as the Node worker
// (../src/protocol.js: framing, validation of inputs against artifact.json, name mapping, errors).
//
// It is a thin adapter: it starts a static server on 127.0.0.1 and one headless Chromium page
// (./chromium.js), which stays open for the worker's life; `load` and `run` are done by the page
// (./page/page.js), which fetches the model and the .npy inputs from the server and times each
// call with performance.now(). Only the timing differs from the Node worker: the Node-side loop of
// protocol.js would time the trip through Playwright, so the page runs the whole first, warm-up
// and timed sequence and its samples are answered instead.
//
// The page crashing or the browser going away ends the process with a message on stderr (exit 70):
// the harness records a crash, and a fresh worker (and browser) serves the next case.

import { existsSync } from 'node:fs';
import { dirname, relative, sep } from 'node:path';
import { oneLine, protectStdout, ProtocolError, Worker } from '../src/protocol.js';
import { packageVersion, requireDtypes } from '../src/runtimes/common.js';
import { openPage, rendererPeakRss } from './chromium.js';
import { BROWSER_RUNTIMES } from './runtimes.js';

const FORMATS = { tfjs: ['tfjs_graph', 'tfjs_layers'], ort: ['onnx13', 'onnx18'] };
/** What each library holds, as in the Node runtimes (src/runtimes/tfjs.js, ort.js). */
const DTYPES = {
  tfjs: ['float32', 'int32', 'bool'],
  ort: ['float32', 'float64', 'float16', 'int8', 'uint8', 'int16', 'uint16', 'int32', 'uint32', 'int64', 'uint64', 'bool'],
};
const TYPED = {
  float32: Float32Array, float64: Float64Array, int8: Int8Array, uint8: Uint8Array, bool: Uint8Array, int16: Int16Array,
  uint16: Uint16Array, float16: Uint16Array, int32: Int32Array, uint32: Uint32Array, int64: BigInt64Array, uint64: BigUint64Array,
};

/**
 * @typedef {import('../src/protocol.js').NdArray} NdArray
 * @typedef {{first_ns: number, samples_ns: number[]}} Timing
 * @typedef {{warmup: number, iterations: number, delayUs: number, urls: Record<string, string>}} Plan
 */

/** The page answers {ok} or {error}; an error becomes a protocol error of `kind`.
 * @param {{ok?: any, error?: string}} answer @param {string} kind @param {string} what */
function unwrap(answer, kind, what) {
  if (answer.error !== undefined) throw new ProtocolError(kind, `${what}${answer.error}`);
  return answer.ok;
}

/** A typed array of the dtype, whatever the page's serialisation handed over. @param {string} dtype @param {any} data */
function typed(dtype, data) {
  const Ctor = /** @type {any} */ (TYPED)[dtype];
  if (!Ctor) throw new ProtocolError('run_failed', `the page returned dtype '${dtype}', which has no .npy type here`);
  if (data instanceof Ctor) return data;
  return Ctor.from(Array.isArray(data) ? data : Object.values(data));
}

/**
 * TF.js flags to set in the page before the backend starts, from HARNESS_TFJS_FLAGS (a JSON object,
 * e.g. {"WEBGL_FORCE_F16_TEXTURES": true}); what was set is reported in `info`.
 * @returns {Record<string, any>}
 */
function tfjsFlags() {
  const text = process.env.HARNESS_TFJS_FLAGS;
  if (!text) return {};
  let flags;
  try {
    flags = JSON.parse(text);
  } catch (e) {
    throw new Error(`HARNESS_TFJS_FLAGS is not valid JSON (${oneLine(e)}): expected an object of TF.js flags`);
  }
  if (flags === null || typeof flags !== 'object' || Array.isArray(flags)) throw new Error('HARNESS_TFJS_FLAGS must be a JSON object of TF.js flags');
  return flags;
}

/**
 * @param {string} name
 * @param {Awaited<ReturnType<typeof openPage>>} browser
 */
async function createBrowserRuntime(name, browser) {
  const { library, backend } = BROWSER_RUNTIMES[/** @type {keyof typeof BROWSER_RUNTIMES} */ (name)];
  const { page, server } = browser;
  const info = unwrap(await page.evaluate(([l, b, f]) => /** @type {any} */ (window).harness.init(l, b, f), /** @type {const} */ ([library, backend, tfjsFlags()])),
    'load_failed', `${name}: starting ${library} on ${backend} in Chromium failed: `);
  let counter = 0;

  /** @type {Record<string, string>} */
  const versions = {
    chromium: browser.version,
    'playwright-core': packageVersion('playwright-core'),
    ...info.versions,
  };
  // Backends whose bundle carries no version constant: the version of the package the page was served.
  if (library === 'tfjs' && backend === 'webgpu') versions['@tensorflow/tfjs-backend-webgpu'] = packageVersion('@tensorflow/tfjs-backend-webgpu');
  return {
    name,
    formats: FORMATS[library],
    info,
    versions: () => versions,
    devices: () => ['cpu'],
    /**
     * @param {import('../src/protocol.js').Artifact} artifact @param {string} modelPath @param {string} fmt
     * @param {string} _device @param {number} threads
     */
    async load(artifact, modelPath, fmt, _device, threads) {
      if (info.unavailable) throw new ProtocolError('unsupported', `${name} is not available in Chromium ${browser.version}: ${info.unavailable}`);
      requireDtypes(artifact, DTYPES[library], library === 'tfjs' ? 'TF.js' : 'ONNX Runtime');
      // The model's own folder only: the page can fetch the model and its weight shards, nothing else.
      const folder = dirname(modelPath);
      const prefix = server.mount(folder, 'a');
      const url = server.url(prefix, relative(folder, modelPath).split(sep).join('/'));
      counter += 1;
      const id = `m${counter}`;
      const spec = { format: fmt, url, inputs: artifact.inputs.map((s) => s.stored_name), outputs: artifact.outputs.map((s) => s.stored_name), threads };
      // Messages name the file on disk (the URL's port changes with every worker).
      const what = fmt === 'tfjs_layers' ? `TF.js layers model ${modelPath}: ` : `${fmt} model ${modelPath}: `;
      unwrap(await page.evaluate(([i, s]) => /** @type {any} */ (window).harness.load(i, s), /** @type {const} */ ([id, spec])), 'load_failed', what);
      return new PageSession(id);
    },
  };

  /** A model loaded in the page. `plan` is set by BrowserWorker.run before each run. */
  function PageSession(/** @type {string} */ id) {
    /** @type {Plan|null} */
    this.plan = null;
    /** @type {Timing|null} */
    this.timing = null;
    this.run = async (/** @type {Record<string, NdArray>} */ _feeds) => {
      const plan = this.plan;
      if (!plan) throw new ProtocolError('run_failed', 'internal: no run plan for the page');
      const r = unwrap(await page.evaluate(([i, u, w, n, d]) => /** @type {any} */ (window).harness.run(i, u, w, n, d),
        /** @type {const} */ ([id, plan.urls, plan.warmup, plan.iterations, plan.delayUs])), 'run_failed', '');
      this.timing = { first_ns: Math.round(r.first_ms * 1e6), samples_ns: r.samples_ms.map((/** @type {number} */ ms) => Math.round(ms * 1e6)) };
      /** @type {Record<string, NdArray>} */
      const out = {};
      for (const [k, v] of Object.entries(r.outputs)) out[k] = { dtype: v.dtype, shape: v.shape, data: typed(v.dtype, v.data) };
      return out;
    };
    this.close = async () => {
      await page.evaluate((i) => /** @type {any} */ (window).harness.unload(i), id);
    };
  }
}

/** The protocol's worker, with the timing taken in the page (see the comment at the top). */
class BrowserWorker extends Worker {
  /**
   * @param {any} runtime
   * @param {Awaited<ReturnType<typeof openPage>>} browser
   */
  constructor(runtime, browser) {
    super(runtime);
    this.browser = browser;
  }

  info() {
    const { versions, precision, ...page } = this.runtime.info;
    // `precision`: the arithmetic the backend computes in (float16 on WebGL without float32 render
    // targets); the harness judges the runtime's cases with that tolerance class.
    return { ...super.info(), precision, browser: { chromium: this.browser.version, executable: this.browser.executable, ...page } };
  }

  /** @param {Record<string, any>} params */
  async run(params) {
    const warmup = Number(params.warmup ?? 0);
    const iterations = Number(params.iterations ?? 1);
    const loaded = this.sessions.get(params.handle);
    const given = params.inputs;
    // Anything unusual (a bad handle, bad counts, inputs that are not a dict) is for protocol.js to
    // refuse with its own messages: hand the request over as it came.
    if (!loaded || !Number.isInteger(warmup) || !Number.isInteger(iterations) || warmup < 0 || iterations < 0 ||
        given === null || typeof given !== 'object' || Array.isArray(given)) {
      return super.run(params);
    }
    /** @type {Record<string, string>} */
    const urls = {};
    for (const spec of loaded.inputs) {
      const path = given[spec.name];
      if (typeof path !== 'string' || !existsSync(path)) continue; // protocol.js says what is wrong with it
      const prefix = this.browser.server.mount(dirname(path), 't');
      urls[spec[loaded.address]] = this.browser.server.url(prefix, relative(dirname(path), path));
    }
    const session = /** @type {any} */ (loaded.session);
    const delayUs = Number(params.delay_us ?? 0); // checked by protocol.js (a self-test's injected slowdown)
    session.plan = { warmup, iterations, delayUs: Number.isFinite(delayUs) && delayUs > 0 ? Math.trunc(delayUs) : 0, urls };
    session.timing = null;
    try {
      // protocol.js reads and checks the inputs, calls the session once (the page runs the whole
      // sequence) and writes the outputs under the signature's names.
      const result = await super.run({ ...params, warmup: 0, iterations: 0 });
      const timing = /** @type {Timing} */ (session.timing);
      return { ...result, first_ns: timing.first_ns, samples_ns: timing.samples_ns, peak_rss_bytes: rendererPeakRss() ?? result.peak_rss_bytes };
    } finally {
      session.plan = null;
    }
  }
}

const USAGE = `usage: node js/browser/worker.js --runtime {${Object.keys(BROWSER_RUNTIMES).join(',')}}`;

/** @param {string[]} argv */
function runtimeName(argv) {
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--runtime') return argv[i + 1];
    if (argv[i].startsWith('--runtime=')) return argv[i].slice('--runtime='.length);
  }
  return undefined;
}

async function main() {
  const name = runtimeName(process.argv.slice(2));
  if (name === undefined || !(name in BROWSER_RUNTIMES)) {
    console.error(name === undefined ? USAGE : `unknown runtime ${JSON.stringify(name)}: expected one of ${Object.keys(BROWSER_RUNTIMES).join(', ')}`);
    process.exit(2);
  }
  const write = protectStdout();
  /** @type {Awaited<ReturnType<typeof openPage>>} */
  let browser;
  let runtime;
  try {
    browser = await openPage({ onConsole: (line) => console.error(line) });
    runtime = await createBrowserRuntime(name, browser);
  } catch (e) {
    console.error(`worker ${name} could not start Chromium and its page: ${oneLine(e)}`);
    process.exit(1);
  }
  // A crashed page or a browser that went away cannot serve another request: say so and die, so the
  // harness records a crash (with this line in the stderr tail) and starts a fresh worker.
  let closing = false;
  browser.page.on('crash', () => {
    console.error(`worker ${name}: the Chromium page crashed`);
    process.exit(70);
  });
  browser.context.on('close', () => {
    if (closing) return;
    console.error(`worker ${name}: Chromium went away`);
    process.exit(70);
  });
  await new BrowserWorker(runtime, browser).serve(process.stdin, write);
  closing = true;
  await browser.close();
  process.exit(0);
}

await main();
