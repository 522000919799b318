// The static server the browser page is served from: 127.0.0.1 only, on a port the OS picks, with
// the cross-origin isolation headers (COOP/COEP) that give the page SharedArrayBuffer, so the wasm
// backends (TF.js wasm, ONNX Runtime Web) run their threaded builds. Files are served by
// serve-static (the expressjs static file middleware: path normalisation, traversal refusal,
// ranges, MIME types); this module only maps URL prefixes to folders.
//
// Fixed mounts: the page itself, js/src (the page imports npy.js from there) and the `dist/`
// folders of the npm packages the page runs. Artifacts and tensor folders are mounted at run time,
// each under its own prefix, so the page can fetch what the worker was asked to load and nothing
// else on the machine.

import { createServer } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import serveStatic from 'serve-static';

export const JS_ROOT = fileURLToPath(new URL('../', import.meta.url));
const MODULES = join(JS_ROOT, 'node_modules');

/** URL prefix → folder served there (the browser runtimes' libraries and the page). */
export const FIXED_MOUNTS = {
  '/page/': join(JS_ROOT, 'browser', 'page'),
  '/src/': join(JS_ROOT, 'src'),
  '/lib/tfjs/': join(MODULES, '@tensorflow', 'tfjs', 'dist'),
  '/lib/tfjs-backend-wasm/': join(MODULES, '@tensorflow', 'tfjs-backend-wasm', 'dist'),
  '/lib/tfjs-backend-webgpu/': join(MODULES, '@tensorflow', 'tfjs-backend-webgpu', 'dist'),
  '/lib/ort/': join(MODULES, 'onnxruntime-web', 'dist'),
};

/** Headers on every answer: cross-origin isolated, same-origin only, never cached. */
export const HEADERS = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
  'Cross-Origin-Resource-Policy': 'same-origin',
  'Cache-Control': 'no-store',
};

/** @param {import('node:http').ServerResponse} res */
function setHeaders(res) {
  for (const [k, v] of Object.entries(HEADERS)) res.setHeader(k, v);
}

export class StaticServer {
  constructor() {
    /** @type {Map<string, {folder: string, handler: any}>} prefix → folder */
    this.mounts = new Map();
    /** @type {Map<string, string>} folder → prefix (a folder is mounted once) */
    this.byFolder = new Map();
    this.counter = 0;
    for (const [prefix, folder] of Object.entries(FIXED_MOUNTS)) this.#add(prefix, folder);
    this.server = createServer((req, res) => this.#handle(req, res));
    /** @type {string} */
    this.origin = '';
  }

  /** Listen on 127.0.0.1 at a free port. @returns {Promise<string>} the origin, http://127.0.0.1:PORT */
  listen() {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => {
        const address = /** @type {import('node:net').AddressInfo} */ (this.server.address());
        this.origin = `http://127.0.0.1:${address.port}`;
        resolve(this.origin);
      });
    });
  }

  close() {
    this.server.closeAllConnections?.();
    return new Promise((resolve) => this.server.close(() => resolve(undefined)));
  }

  /**
   * Serve a folder under a fresh prefix (the same prefix if it is already served).
   * @param {string} folder  an absolute path
   * @param {string} kind  a word for the prefix (`a` artifact, `t` tensors)
   * @returns {string} the URL prefix, ending in `/`
   */
  mount(folder, kind) {
    const known = this.byFolder.get(folder);
    if (known) return known;
    this.counter += 1;
    const prefix = `/${kind}${this.counter}/`;
    this.#add(prefix, folder);
    return prefix;
  }

  /** The absolute URL of a file inside a mounted prefix. @param {string} prefix @param {string} rel */
  url(prefix, rel) {
    return this.origin + prefix + rel.split('/').map(encodeURIComponent).join('/');
  }

  /** @param {string} prefix @param {string} folder */
  #add(prefix, folder) {
    const handler = serveStatic(folder, { index: ['index.html'], dotfiles: 'ignore', fallthrough: false, setHeaders, etag: false, lastModified: false });
    this.mounts.set(prefix, { folder, handler });
    this.byFolder.set(folder, prefix);
  }

  /** @param {import('node:http').IncomingMessage} req @param {import('node:http').ServerResponse} res */
  #handle(req, res) {
    const url = req.url ?? '/';
    const done = (/** @type {any} */ err) => {
      const status = err?.status ?? err?.statusCode ?? (err ? 500 : 404);
      setHeaders(res);
      res.statusCode = status;
      res.setHeader('Content-Type', 'text/plain; charset=utf-8');
      res.end(`${status} ${req.method} ${url}\n`);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return done({ status: 405 });
    let prefix = '';
    for (const p of this.mounts.keys()) if (url.startsWith(p) && p.length > prefix.length) prefix = p;
    if (url === '/' || url === '/index.html') {
      res.statusCode = 302;
      res.setHeader('Location', '/page/index.html');
      setHeaders(res);
      return res.end();
    }
    if (!prefix) return done(null);
    const mount = /** @type {{folder: string, handler: any}} */ (this.mounts.get(prefix));
    req.url = url.slice(prefix.length - 1); // keep the leading `/`
    mount.handler(req, res, done);
  }
}
