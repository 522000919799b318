// The worker side of the runner protocol (../../DESIGN.md, "Runner protocol"), a port of
// runners/protocol.py: JSON-RPC 2.0, one object per line on stdin/stdout, tensors as .npy files.
// A runtime (src/runtimes/*.js) only loads models and runs one inference; this module does the
// rest — framing, validation of inputs against artifact.json, timing, name mapping, errors — and
// keeps the same messages as the Python workers, so every runner reads alike in a report.

import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { readNpy, writeNpy } from './npy.js';

export const PROTOCOL_VERSION = 1;

/**
 * @typedef {import('./npy.js').NdArray} NdArray
 * @typedef {{name: string, stored_name: string, dtype: string, shape: (number|null)[]|null}} TensorSpec
 * @typedef {{format: string, status: string, path: string, signature?: string, error?: string,
 *   inputs: TensorSpec[], outputs: TensorSpec[], extra?: Record<string, any>}} Artifact
 * @typedef {{run(feeds: Record<string, NdArray>): Record<string, NdArray>|Promise<Record<string, NdArray>>,
 *   close?(): void|Promise<void>}} Session
 *   `run` is one inference including whatever makes the result readable on the host; it takes and
 *   returns arrays keyed by the artifact field the runtime's `address` names.
 * @typedef {{name: string, formats: string[], versions(): Record<string, string>, devices?(): string[],
 *   address?(format: string): 'stored_name'|'name',
 *   load(artifact: Artifact, modelPath: string, format: string, device: string, threads: number): Promise<Session>}} Runtime
 *   `address` says which artifact.json field names tensors for this runtime: `stored_name` (the
 *   format's own names, the default) or `name` (the signature's keys).
 */

/** An error answered to the client; `kind` is one of bad_request, load_failed, bad_input, unsupported, run_failed. */
export class ProtocolError extends Error {
  /** @param {string} kind @param {string} message */
  constructor(kind, message) {
    super(message);
    this.name = 'ProtocolError';
    this.kind = kind;
  }
}

class RpcError extends Error {
  /** @param {number} code @param {string} message @param {string} kind */
  constructor(code, message, kind) {
    super(message);
    this.code = code;
    this.kind = kind;
  }
}

// --- Python-style formatting, so messages match the Python workers' word for word ---------------

/** Python's repr of a str (or None for null/undefined). @param {unknown} s */
export function pyRepr(s) {
  if (s === null || s === undefined) return 'None';
  if (typeof s !== 'string') return JSON.stringify(s);
  const quote = s.includes("'") && !s.includes('"') ? '"' : "'";
  const body = s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
  return quote + (quote === "'" ? body.replace(/'/g, "\\'") : body) + quote;
}

/** Python's repr of a list of str or int. @param {(string|number)[]} items */
export function pyList(items) {
  return '[' + items.map((x) => (typeof x === 'string' ? pyRepr(x) : String(x))).join(', ') + ']';
}

/** Python's sorted() of strings (code point order). @param {Iterable<string>} items */
function sorted(items) {
  return [...items].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/** One line, never cut: the decisive part of a runtime's message is often at its end.
 * @param {unknown} e @param {number} [limit] */
export function oneLine(e, limit = Infinity) {
  const text = String(e instanceof Error ? e.message : e)
    .split('\n')
    .map((s) => s.trim())
    .filter(Boolean)
    .join(' ');
  return text.length <= limit ? text : text.slice(0, limit - 3) + '...';
}

/** What a parsed JSON value is, in the words every worker says alike: 'an array', 'null'... @param {unknown} v */
function jsonKind(v) {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return { boolean: 'a boolean', number: 'a number', string: 'a string' }[typeof v] ?? 'an object';
}

/** @param {unknown} e */
function errorName(e) {
  return e instanceof Error ? e.constructor.name || e.name : typeof e;
}

/** @param {string} name */
function safe(name) {
  return name.replace(/[^\p{L}\p{N}\-_.]/gu, '_');
}

const PY_TYPE = { string: 'str', object: 'dict' };

/** @param {Record<string, any>} params @param {string} name @param {'string'|'object'} kind */
function param(params, name, kind) {
  if (!(name in params)) throw new ProtocolError('bad_request', `missing parameter ${pyRepr(name)}`);
  const value = params[name];
  const ok = kind === 'object' ? value !== null && typeof value === 'object' && !Array.isArray(value) : typeof value === kind;
  if (!ok) throw new ProtocolError('bad_request', `parameter ${pyRepr(name)} must be a ${PY_TYPE[kind]}`);
  return value;
}

/** @param {Record<string, any>} params @param {string} name @param {number} fallback */
function intParam(params, name, fallback) {
  const value = params[name] ?? fallback;
  const n = typeof value === 'string' && value.trim() !== '' ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isFinite(n)) throw new ProtocolError('bad_request', `parameter ${pyRepr(name)} must be an int`);
  return Math.trunc(n);
}

/** @param {TensorSpec} spec @param {NdArray} value */
export function checkInput(spec, value) {
  const name = spec.name;
  if (value.dtype !== spec.dtype) {
    throw new ProtocolError('bad_input', `input ${pyRepr(name)} has dtype ${value.dtype}, expected ${spec.dtype}`);
  }
  const shape = spec.shape;
  if (shape === null || shape === undefined) return;
  if (value.shape.length !== shape.length || shape.some((d, i) => d !== null && d !== value.shape[i])) {
    const want = '[' + shape.map((d) => (d === null ? '?' : String(d))).join(', ') + ']';
    throw new ProtocolError('bad_input', `input ${pyRepr(name)} has shape ${pyList(value.shape)}, expected ${want}`);
  }
}

/** @param {string} path @param {string} name @returns {NdArray} */
function readInput(path, name) {
  if (typeof path !== 'string') throw new ProtocolError('bad_input', `input ${pyRepr(name)}: expected a path to a .npy file, got ${JSON.stringify(path)}`);
  if (!existsSync(path)) throw new ProtocolError('bad_input', `input ${pyRepr(name)}: file ${path} does not exist`);
  try {
    return readNpy(path);
  } catch (e) {
    throw new ProtocolError('bad_input', `input ${pyRepr(name)}: ${path} is not a valid .npy file (${oneLine(e)})`);
  }
}

const now = () => process.hrtime.bigint();

/** Busy-wait for `us` microseconds (the injected slowdown of a self-test). @param {number} us */
function spin(us) {
  const until = now() + BigInt(us) * 1000n;
  while (now() < until);
}

/**
 * @typedef {{session: Session, inputs: TensorSpec[], outputs: TensorSpec[], address: 'stored_name'|'name'}} Loaded
 */

export class Worker {
  /** @param {Runtime} runtime */
  constructor(runtime) {
    this.runtime = runtime;
    /** @type {Map<string, Loaded>} */
    this.sessions = new Map();
    this.counter = 0;
  }

  devices() {
    return this.runtime.devices ? this.runtime.devices() : ['cpu'];
  }

  // --- methods -----------------------------------------------------------------------------------
  info() {
    return {
      runtime: this.runtime.name,
      protocol: PROTOCOL_VERSION,
      versions: this.runtime.versions(),
      devices: this.devices(),
      formats: [...this.runtime.formats],
      pid: process.pid,
    };
  }

  /** @param {Record<string, any>} params */
  async load(params) {
    const folder = stripSlash(param(params, 'artifact', 'string'));
    const fmt = param(params, 'format', 'string');
    const device = params.device ?? 'cpu';
    const threads = intParam(params, 'threads', 0) || 0;
    const { name, formats } = this.runtime;
    if (!formats.includes(fmt)) {
      throw new ProtocolError('unsupported', `runtime ${name} does not load format ${pyRepr(fmt)}: expected one of ${pyList(formats)}`);
    }
    if (!this.devices().includes(device)) {
      throw new ProtocolError('unsupported', `runtime ${name} has no device ${pyRepr(device)}: expected one of ${pyList(this.devices())}`);
    }
    const metaPath = join(folder, 'artifact.json');
    /** @type {Artifact} */
    let artifact;
    try {
      artifact = JSON.parse(readFileSync(metaPath, 'utf8'));
    } catch (e) {
      if (/** @type {any} */ (e).code === 'ENOENT') throw new ProtocolError('load_failed', `missing artifact: ${metaPath} does not exist`);
      throw new ProtocolError('load_failed', `corrupt artifact: ${metaPath} is not valid JSON (${oneLine(e)})`);
    }
    if (typeof artifact !== 'object' || artifact === null || Array.isArray(artifact)) {
      throw new ProtocolError('load_failed', `corrupt artifact: ${metaPath} is not a JSON object (it holds ${jsonKind(artifact)})`);
    }
    if (artifact.format !== fmt) {
      throw new ProtocolError('bad_request', `artifact ${folder} is format ${pyRepr(artifact.format)}, expected ${pyRepr(fmt)}`);
    }
    if (artifact.status !== 'ok') {
      throw new ProtocolError('load_failed', `artifact ${folder} failed to export: ${artifact.error ?? 'None'}`);
    }
    artifact.signature = params.signature || artifact.signature || 'serving_default';
    const modelPath = join(folder, artifact.path);
    if (!existsSync(modelPath)) throw new ProtocolError('load_failed', `missing artifact file: ${modelPath} does not exist`);

    const start = now();
    /** @type {Session} */
    let session;
    try {
      session = await this.runtime.load(artifact, modelPath, fmt, device, threads);
    } catch (e) {
      if (e instanceof ProtocolError) throw e;
      throw new ProtocolError('load_failed', `${errorName(e)}: ${oneLine(e)}`);
    }
    const loadNs = Number(now() - start);
    this.counter += 1;
    const handle = `h${this.counter}`;
    const address = this.runtime.address ? this.runtime.address(fmt) : 'stored_name';
    this.sessions.set(handle, { session, inputs: artifact.inputs, outputs: artifact.outputs, address });
    /** @param {TensorSpec[]} specs */
    const io = (specs) => specs.map((s) => ({ name: s.name, dtype: s.dtype, shape: s.shape }));
    return { handle, inputs: io(artifact.inputs), outputs: io(artifact.outputs), load_ns: loadNs };
  }

  /** @param {Record<string, any>} params */
  async run(params) {
    const loaded = this.session(params);
    const given = param(params, 'inputs', 'object');
    const outputDir = param(params, 'output_dir', 'string');
    const warmup = intParam(params, 'warmup', 0);
    const iterations = intParam(params, 'iterations', 1);
    if (warmup < 0 || iterations < 0) {
      throw new ProtocolError('bad_request', `warmup and iterations must be >= 0, got ${warmup} and ${iterations}`);
    }
    // Self-tests only: a busy-wait of delay_us inside each timed call (an injected slowdown).
    const delayUs = intParam(params, 'delay_us', 0);
    if (delayUs < 0) throw new ProtocolError('bad_request', `delay_us must be >= 0, got ${delayUs}`);
    const expected = new Set(loaded.inputs.map((s) => s.name));
    const givenNames = Object.keys(given);
    if (givenNames.length !== expected.size || givenNames.some((n) => !expected.has(n))) {
      const missing = sorted([...expected].filter((n) => !(n in given)));
      const extra = sorted(givenNames.filter((n) => !expected.has(n)));
      throw new ProtocolError(
        'bad_input',
        `inputs ${pyList(sorted(givenNames))} do not match the signature: expected ${pyList(sorted(expected))}` +
          (missing.length ? ` (missing ${pyList(missing)})` : '') +
          (extra.length ? ` (unknown ${pyList(extra)})` : ''),
      );
    }
    /** @type {Record<string, NdArray>} */
    const feeds = {};
    for (const spec of loaded.inputs) {
      const value = readInput(given[spec.name], spec.name);
      checkInput(spec, value);
      feeds[spec[loaded.address]] = value;
    }

    const session = loaded.session;
    // A synchronous runtime (TF.js with dataSync) is timed without a trip through the microtask
    // queue: a result is awaited only when it is a promise.
    const once = () => session.run(feeds);
    /** @type {Record<string, NdArray>} */
    let result;
    let firstNs;
    /** @type {number[]} */
    const samples = [];
    try {
      let start = now();
      let r = once();
      if (r instanceof Promise) r = await r;
      firstNs = Number(now() - start);
      result = /** @type {Record<string, NdArray>} */ (r);
      for (let i = 0; i < warmup; i++) {
        const w = once();
        if (w instanceof Promise) await w;
      }
      for (let i = 0; i < iterations; i++) {
        start = now();
        const s = once();
        if (s instanceof Promise) await s;
        if (delayUs) spin(delayUs);
        samples.push(Number(now() - start));
      }
    } catch (e) {
      if (e instanceof ProtocolError) throw e;
      throw new ProtocolError('run_failed', `${errorName(e)}: ${oneLine(e)}`);
    }

    mkdirSync(outputDir, { recursive: true });
    /** @type {Record<string, string>} */
    const outputs = {};
    for (const spec of loaded.outputs) {
      const key = spec[loaded.address];
      if (!(key in result)) {
        throw new ProtocolError('run_failed', `runtime returned ${pyList(sorted(Object.keys(result)))}, missing output ${pyRepr(key)} (${pyRepr(spec.name)})`);
      }
      const path = join(outputDir, `${safe(spec.name)}.npy`);
      writeNpy(path, result[key]);
      outputs[spec.name] = path;
    }
    return {
      outputs,
      first_ns: firstNs,
      samples_ns: samples,
      peak_rss_bytes: peakRssBytes(),
    };
  }

  /** @param {Record<string, any>} params */
  async unload(params) {
    const loaded = this.session(params);
    await loaded.session.close?.();
    this.sessions.delete(params.handle);
    return {};
  }

  /** @param {Record<string, any>} params */
  session(params) {
    const handle = param(params, 'handle', 'string');
    const loaded = this.sessions.get(handle);
    if (!loaded) throw new ProtocolError('bad_request', `unknown handle ${pyRepr(handle)}: expected one of ${pyList(sorted(this.sessions.keys()))}`);
    return loaded;
  }

  // --- framing -----------------------------------------------------------------------------------
  /**
   * Serve requests one at a time until `shutdown` or the end of input.
   * @param {NodeJS.ReadableStream} input
   * @param {(line: string) => void} write  writes one protocol line (the real stdout)
   */
  async serve(input, write) {
    /** @type {Record<string, (p: Record<string, any>) => any>} */
    const methods = {
      info: () => this.info(),
      load: (p) => this.load(p),
      run: (p) => this.run(p),
      unload: (p) => this.unload(p),
    };
    /** @param {object} message */
    const send = (message) => write(JSON.stringify(message) + '\n');
    for await (const line of createInterface({ input, crlfDelay: Infinity })) {
      if (!line.trim()) continue;
      /** @type {any} */
      let id = null;
      try {
        let request;
        try {
          request = JSON.parse(line);
        } catch (e) {
          throw new RpcError(-32700, `parse error: ${oneLine(e)}`, 'bad_request');
        }
        if (request === null || typeof request !== 'object' || Array.isArray(request) || request.jsonrpc !== '2.0' || !('method' in request)) {
          throw new RpcError(-32600, 'invalid request: expected a JSON-RPC 2.0 object with a method', 'bad_request');
        }
        id = request.id ?? null;
        const method = request.method;
        const params = request.params || {};
        if (method === 'shutdown') {
          send({ jsonrpc: '2.0', id, result: {} });
          return;
        }
        if (typeof method !== 'string' || !Object.hasOwn(methods, method)) {
          throw new RpcError(-32601, `unknown method ${pyRepr(method)}: expected one of ${pyList([...sorted(Object.keys(methods)), 'shutdown'])}`, 'bad_request');
        }
        if (typeof params !== 'object' || Array.isArray(params)) throw new RpcError(-32602, 'params must be an object', 'bad_request');
        const result = await methods[method](params);
        send({ jsonrpc: '2.0', id, result });
      } catch (e) {
        if (e instanceof RpcError) {
          send({ jsonrpc: '2.0', id, error: { code: e.code, message: e.message, data: { kind: e.kind } } });
        } else if (e instanceof ProtocolError) {
          send({ jsonrpc: '2.0', id, error: { code: -32000, message: e.message, data: { kind: e.kind } } });
        } else {
          // A bug in the worker or an unexpected library error: say so, keep serving.
          console.error(e);
          send({ jsonrpc: '2.0', id, error: { code: -32603, message: `internal error: ${errorName(e)}: ${oneLine(e)}`, data: { kind: 'run_failed' } } });
        }
      }
    }
  }
}

/**
 * Peak resident memory of this process (VmHWM), as the Python workers report it. getrusage's
 * maxRSS (process.resourceUsage) is not used: on Linux it carries over the high-water mark of the
 * process that spawned the worker across exec.
 */
export function peakRssBytes() {
  try {
    const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]) * 1024;
  } catch {
    // not Linux
  }
  return process.resourceUsage().maxRSS * 1024;
}

/** @param {string} p */
function stripSlash(p) {
  return p.length > 1 ? p.replace(/\/+$/, '') : p;
}

/**
 * Keep the protocol channel clean: TF.js and emscripten print to stdout (console.log, "Hi there"
 * banners, warnings), which would corrupt the framing. Everything that goes through
 * process.stdout or console is sent to stderr; the returned function is the only writer of
 * protocol lines to the real stdout.
 * @returns {(line: string) => void}
 */
export function protectStdout() {
  const stdout = process.stdout;
  const write = stdout.write.bind(stdout);
  const toStderr = /** @type {any} */ (process.stderr.write.bind(process.stderr));
  stdout.write = toStderr;
  for (const name of /** @type {const} */ (['log', 'info', 'debug', 'warn', 'trace'])) {
    console[name] = console.error;
  }
  return (line) => {
    write(line);
  };
}
