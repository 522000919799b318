// The worker side of the runner protocol (docs/architecture.md, "The runner protocol"), a port of
// runners/protocol.py: JSON-RPC 2.0, one object per line on stdin/stdout, tensors as .npy files.
// A runtime (src/runtimes/*.js) only loads models and runs one inference; this module does the
// rest — framing, validation of inputs against artifact.json, timing, name mapping, errors. Errors
// are facts (kind, code, field, expected, got, path, detail: ../../harness/schemas/protocol.schema.json);
// the harness forms the sentence a person reads.

import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { readNpy, writeNpy } from './npy.js';

export const PROTOCOL_VERSION = 1;
const METHODS = ['info', 'load', 'run', 'unload', 'shutdown'];

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

/**
 * An error answered to the client: `kind` is one of bad_request, load_failed, bad_input, unsupported,
 * run_failed; `code` and `facts` (field, expected, got, path) are what the harness forms its sentence
 * from. A runtime's own refusal is `new ProtocolError(kind, words)`: code runtime_refused, the words
 * its detail.
 */
export class ProtocolError extends Error {
  /**
   * @param {string} kind @param {string|null|undefined} detail  a library's or runtime's own words
   * @param {string} [code] @param {Record<string, unknown>} [facts] @param {number} [rpcCode]
   */
  constructor(kind, detail, code = 'runtime_refused', facts = {}, rpcCode = -32000) {
    super(detail ?? code);
    this.name = 'ProtocolError';
    Object.assign(this, { kind, detail, code, facts, rpcCode });
  }

  /** The JSON-RPC error object. */
  toJSON() {
    const data = { kind: this.kind, code: this.code, ...this.facts, ...(this.detail === undefined ? {} : { detail: this.detail }) };
    return { code: this.rpcCode, message: this.message, data };
  }
}

/** A protocol error with facts and no words. @param {string} kind @param {string} code @param {Record<string, unknown>} [facts] */
const fail = (kind, code, facts = {}) => new ProtocolError(kind, undefined, code, facts);

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

/** The JSON type of a parsed value, as the schema names them. @param {unknown} v */
function jsonType(v) {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return { boolean: 'boolean', number: 'number', string: 'string' }[typeof v] ?? 'object';
}

/** @param {unknown} e */
function errorName(e) {
  return e instanceof Error ? e.constructor.name || e.name : typeof e;
}

/** @param {string} name */
function safe(name) {
  return name.replace(/[^\p{L}\p{N}\-_.]/gu, '_');
}

/** @param {Record<string, any>} params @param {string} name @param {'string'|'object'} type */
function param(params, name, type) {
  if (!(name in params)) throw fail('bad_request', 'missing_param', { field: name });
  const value = params[name];
  if (jsonType(value) !== type) throw fail('bad_request', 'wrong_param_type', { field: name, expected: type, got: jsonType(value) });
  return value;
}

/** @param {Record<string, any>} params @param {string} name @param {number} fallback */
function intParam(params, name, fallback) {
  const value = params[name] ?? fallback;
  if (!Number.isInteger(value)) throw fail('bad_request', 'wrong_param_type', { field: name, expected: 'integer', got: jsonType(value) });
  return value;
}

/** @param {TensorSpec} spec @param {NdArray} value */
export function checkInput(spec, value) {
  const field = `inputs.${spec.name}`;
  if (value.dtype !== spec.dtype) throw fail('bad_input', 'wrong_dtype', { field, expected: spec.dtype, got: value.dtype });
  const shape = spec.shape;
  if (shape === null || shape === undefined) return;
  if (value.shape.length !== shape.length || shape.some((d, i) => d !== null && d !== value.shape[i])) {
    throw fail('bad_input', 'wrong_shape', { field, expected: shape, got: value.shape });
  }
}

/** @param {unknown} path @param {string} name @returns {NdArray} */
function readInput(path, name) {
  const field = `inputs.${name}`;
  if (typeof path !== 'string') throw fail('bad_request', 'wrong_param_type', { field, expected: 'string', got: jsonType(path) });
  if (!existsSync(path)) throw fail('bad_input', 'input_file_missing', { field, path });
  try {
    return readNpy(path);
  } catch (e) {
    throw new ProtocolError('bad_input', oneLine(e), 'input_not_npy', { field, path });
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
    if (!formats.includes(fmt)) throw fail('unsupported', 'format_not_taken', { field: 'format', expected: formats, got: fmt });
    if (!this.devices().includes(device)) throw fail('unsupported', 'device_not_available', { field: 'device', expected: this.devices(), got: device });
    const path = join(folder, 'artifact.json');
    /** @type {Artifact} */
    let artifact;
    try {
      artifact = JSON.parse(readFileSync(path, 'utf8'));
    } catch (e) {
      if (/** @type {any} */ (e).code === 'ENOENT') throw fail('load_failed', 'artifact_missing', { path });
      const code = e instanceof SyntaxError ? 'artifact_not_json' : 'artifact_unreadable';
      throw new ProtocolError('load_failed', oneLine(e), code, { path });
    }
    if (jsonType(artifact) !== 'object') throw fail('load_failed', 'artifact_not_object', { path, expected: 'object', got: jsonType(artifact) });
    if (artifact.format !== fmt) {
      throw fail('bad_request', 'format_mismatch', { field: 'format', path: folder, expected: fmt, got: artifact.format ?? null });
    }
    if (artifact.status !== 'ok') throw new ProtocolError('load_failed', artifact.error ?? null, 'export_failed', { path: folder });
    artifact.signature = params.signature || artifact.signature || 'serving_default';
    const modelPath = join(folder, artifact.path);
    if (!existsSync(modelPath)) throw fail('load_failed', 'model_file_missing', { path: modelPath });

    const start = now();
    /** @type {Session} */
    let session;
    try {
      session = await this.runtime.load(artifact, modelPath, fmt, device, threads);
    } catch (e) {
      if (e instanceof ProtocolError) throw e;
      throw new ProtocolError('load_failed', `${errorName(e)}: ${oneLine(e)}`, 'library_error');
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
    // Self-tests only: a busy-wait of delay_us inside each timed call (an injected slowdown).
    const delayUs = intParam(params, 'delay_us', 0);
    for (const [field, got] of Object.entries({ warmup, iterations, delay_us: delayUs })) {
      if (got < 0) throw fail('bad_request', 'out_of_range', { field, expected: { minimum: 0 }, got });
    }
    const expected = loaded.inputs.map((s) => s.name);
    const got = Object.keys(given);
    if (got.length !== expected.length || got.some((n) => !expected.includes(n))) {
      const code = expected.some((n) => !(n in given)) ? 'missing_input' : 'unknown_input';
      throw fail('bad_input', code, { field: 'inputs', expected, got });
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
      throw new ProtocolError('run_failed', `${errorName(e)}: ${oneLine(e)}`, 'library_error');
    }

    mkdirSync(outputDir, { recursive: true });
    /** @type {Record<string, string>} */
    const outputs = {};
    for (const spec of loaded.outputs) {
      const key = spec[loaded.address];
      if (!(key in result)) {
        throw fail('run_failed', 'missing_output', { field: `outputs.${spec.name}`, expected: key, got: Object.keys(result) });
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
    if (!loaded) throw fail('bad_request', 'unknown_handle', { field: 'handle', expected: [...this.sessions.keys()], got: handle });
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
          throw new ProtocolError('bad_request', oneLine(e), 'parse_error', {}, -32700);
        }
        if (jsonType(request) !== 'object' || request.jsonrpc !== '2.0' || !('method' in request)) {
          throw new ProtocolError('bad_request', undefined, 'invalid_request', {}, -32600);
        }
        id = request.id ?? null;
        const method = request.method;
        const params = request.params || {};
        if (method === 'shutdown') {
          send({ jsonrpc: '2.0', id, result: {} });
          return;
        }
        if (typeof method !== 'string' || !Object.hasOwn(methods, method)) {
          throw new ProtocolError('bad_request', undefined, 'unknown_method', { field: 'method', expected: METHODS, got: method }, -32601);
        }
        if (jsonType(params) !== 'object') {
          throw new ProtocolError('bad_request', undefined, 'invalid_params', { field: 'params', expected: 'object', got: jsonType(params) }, -32602);
        }
        const result = await methods[method](params);
        send({ jsonrpc: '2.0', id, result });
      } catch (e) {
        if (!(e instanceof ProtocolError)) console.error(e); // a bug in the worker or an unexpected library error: keep serving
        const error = e instanceof ProtocolError ? e : new ProtocolError('run_failed', `${errorName(e)}: ${oneLine(e)}`, 'internal_error', {}, -32603);
        send({ jsonrpc: '2.0', id, error });
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
