// Test helpers: a protocol client that spawns the real worker, artifact lookup in the harness
// cache, and NumPy (the repo's .venv) as the independent reference for .npy files. Kept out of
// test/, where `node --test js/test/` would count this file as a test of its own.

import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const JS_ROOT = fileURLToPath(new URL('../', import.meta.url)); // js/
export const REPO = join(JS_ROOT, '..');
export const WORKER = join(JS_ROOT, 'src', 'worker.js');
export const PYTHON = process.env.HARNESS_PYTHON ?? join(REPO, '.venv', 'bin', 'python');

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

/** fixture×format → cache folder: each is looked up once per test process. @type {Map<string, string>} */
const artifacts = new Map();

/**
 * The cache folder of fixture×format as the harness itself finds it (`harness export --json`:
 * exported first if the current cache key has none), so a test never picks up an artifact left
 * from an older exporter or converter. Honours HARNESS_CACHE, as the CLI does. Throws with the
 * export's error (and the CLI's stderr tail) when the artifact is not ok.
 * @param {string} fixture @param {string} format @returns {string}
 */
export function artifact(fixture, format) {
  const memo = artifacts.get(`${fixture}\0${format}`);
  if (memo !== undefined) return memo;
  const harness = join(REPO, '.venv', 'bin', 'harness');
  const args = ['export', '-f', fixture, '-F', format, '--json'];
  const what = `harness ${args.join(' ')}`;
  // cwd: the repository (the CLI finds the per-user export cache, or HARNESS_CACHE, from anywhere).
  const r = spawnSync(harness, args, { cwd: REPO, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  const stderrTail = () => (r.stderr ?? '').trim().split('\n').slice(-20).join('\n');
  if (r.error) throw new Error(`${what}: ${r.error.message} (make setup creates ${harness})`);
  /** @type {{fixture: string, format: string, status: string, key: string, dir: string, error: string|null}[]} */
  const lines = [];
  for (const line of (r.stdout ?? '').split('\n')) {
    if (!line.trim()) continue;
    try {
      lines.push(JSON.parse(line));
    } catch {
      throw new Error(`${what}: not a JSON line on stdout: ${JSON.stringify(line)}\nstderr:\n${stderrTail()}`);
    }
  }
  const found = lines.find((a) => a.fixture === fixture && a.format === format);
  if (!found) {
    throw new Error(`${what} (exit ${r.status ?? r.signal}) printed no artifact for ${fixture} ${format}\nstderr:\n${stderrTail()}`);
  }
  if (found.status !== 'ok' || r.status !== 0) {
    throw new Error(`${what}: ${fixture} ${format} is ${found.status} (exit ${r.status ?? r.signal}): ${found.error}\nstderr:\n${stderrTail()}`);
  }
  if (!existsSync(join(found.dir, 'artifact.json'))) {
    throw new Error(`${what} answered ${found.dir}, which has no artifact.json`);
  }
  artifacts.set(`${fixture}\0${format}`, found.dir);
  return found.dir;
}

/** A CI run (CI=true): there a piece a test needs must be present, so its absence fails the test. */
export const IN_CI = process.env.CI === 'true';

/**
 * Something a test needs (a native build, a library). `skip` goes in the test's options: the
 * reason when it is missing, outside CI; `check()` goes first in the test (or its suite's
 * `before`): in CI it fails the test with the reason instead, so CI cannot pass by skipping.
 * @param {boolean} met @param {string} reason
 */
export function requirement(met, reason) {
  return {
    skip: met || IN_CI ? false : reason,
    check() {
      if (!met && IN_CI) throw new Error(`${reason} (CI=true: required, so this fails instead of skipping)`);
    },
  };
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

  /** The result, or throw the protocol error (with `.kind` and the facts in `.data`). @param {string} method @param {object} [params] */
  async call(method, params) {
    const response = await this.request(method, params);
    if (response.error) {
      const e = new Error(response.error.message);
      Object.assign(e, { kind: response.error.data?.kind, code: response.error.code, data: response.error.data });
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
