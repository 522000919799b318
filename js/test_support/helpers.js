// Test helpers: a protocol client that spawns the real worker, artifact lookup in the harness
// cache, and NumPy (the repo's .venv) as the independent reference for .npy files. Kept out of
// test/, where `node --test js/test/` would count this file as a test of its own.

import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const JS_ROOT = fileURLToPath(new URL('../', import.meta.url)); // js/
export const REPO = join(JS_ROOT, '..');
export const WORKER = join(JS_ROOT, 'src', 'worker.js');
export const PYTHON = process.env.HARNESS_PYTHON ?? join(REPO, '.venv', 'bin', 'python');
const CACHE = join(REPO, '.harness', 'cache');

/** Run Python (the repo venv's, with NumPy) on a script; returns its stdout. @param {string} code */
export function python(code) {
  return execFileSync(PYTHON, ['-c', code], { encoding: 'utf8' });
}

/** A fresh scratch folder, removed when the process exits. */
export function scratch() {
  const dir = mkdtempSync(join(tmpdir(), 'harness-js-'));
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * The cache folder of an exported artifact (status ok), exporting the fixture first if there is
 * none. @param {string} fixture @param {string} format @returns {string}
 */
export function artifact(fixture, format) {
  const find = () =>
    (existsSync(CACHE) ? readdirSync(CACHE) : [])
      .filter((d) => d.startsWith(`${fixture}-${format}-`) && !d.endsWith('.lock'))
      .map((d) => join(CACHE, d))
      .filter((d) => {
        try {
          return JSON.parse(readFileSync(join(d, 'artifact.json'), 'utf8')).status === 'ok';
        } catch {
          return false;
        }
      });
  let found = find();
  if (found.length === 0) {
    const harness = join(REPO, '.venv', 'bin', 'harness');
    const r = spawnSync(harness, ['export', '-f', fixture, '-F', format], { cwd: REPO, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`harness export -f ${fixture} -F ${format} failed: ${r.stderr || r.error}`);
    found = find();
  }
  if (found.length === 0) throw new Error(`no ${fixture} ${format} artifact with status ok in ${CACHE}`);
  // Several keys may be cached (older sources); the newest export is the current one.
  const exported = (/** @type {string} */ d) => statSync(join(d, 'artifact.json')).mtimeMs;
  return found.sort((a, b) => exported(b) - exported(a))[0];
}

/** Whether the tfjs-node native binding has been built (js/setup.sh). */
export function tfjsNodeBuilt() {
  const lib = join(JS_ROOT, 'node_modules', '@tensorflow', 'tfjs-node', 'lib');
  return existsSync(lib) && readdirSync(lib).some((d) => existsSync(join(lib, d, 'tfjs_binding.node')));
}

/** A running worker and a JSON-RPC client for it. */
export class WorkerProcess {
  /**
   * @param {string} runtime  a Node runtime name, or `python:<module>` for a Python worker of the repo
   * @param {string[]} [nodeArgs]
   */
  constructor(runtime, nodeArgs = []) {
    this.proc = runtime.startsWith('python:')
      ? spawn(PYTHON, ['-m', runtime.slice('python:'.length)], { cwd: REPO, stdio: ['pipe', 'pipe', 'pipe'] })
      : spawn(process.execPath, [...nodeArgs, WORKER, '--runtime', runtime], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.stderr = '';
    this.proc.stderr.on('data', (d) => (this.stderr += d));
    /** @type {string[]} */
    this.lines = [];
    /** @type {((line: string|null) => void)[]} */
    this.waiting = [];
    createInterface({ input: this.proc.stdout }).on('line', (line) => {
      const w = this.waiting.shift();
      if (w) w(line);
      else this.lines.push(line);
    });
    this.exited = new Promise((resolve) => this.proc.on('exit', (code, signal) => resolve({ code, signal })));
    this.exited.then(() => this.waiting.splice(0).forEach((w) => w(null)));
    this.nextId = 0;
  }

  /** The next line the worker writes on stdout (null once it exited). @returns {Promise<string|null>} */
  readLine() {
    if (this.lines.length) return Promise.resolve(/** @type {string} */ (this.lines.shift()));
    if (this.proc.exitCode !== null) return Promise.resolve(null);
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /** Send a raw line and read the answer. @param {string} line */
  async raw(line) {
    this.proc.stdin.write(line + '\n');
    const answer = await this.readLine();
    if (answer === null) throw new Error(`worker exited; stderr:\n${this.stderr}`);
    return JSON.parse(answer);
  }

  /** The whole JSON-RPC response. @param {string} method @param {object} [params] */
  async request(method, params) {
    const id = ++this.nextId;
    const response = await this.raw(JSON.stringify({ jsonrpc: '2.0', id, method, params }));
    if (response.id !== id) throw new Error(`answer to ${id} has id ${response.id}`);
    return response;
  }

  /** The result, or throw the protocol error (with `.kind`). @param {string} method @param {object} [params] */
  async call(method, params) {
    const response = await this.request(method, params);
    if (response.error) {
      const e = new Error(response.error.message);
      Object.assign(e, { kind: response.error.data?.kind, code: response.error.code });
      throw e;
    }
    return response.result;
  }

  async shutdown() {
    if (this.proc.exitCode === null) {
      await this.call('shutdown');
      this.proc.stdin.end();
    }
    return this.exited;
  }
}
