// Start Debian's Chromium with Playwright (playwright-core: no browser download is attempted) and
// open the harness page on the static server. Shared by the worker and the doctor probe.

import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { StaticServer } from './server.js';

/** Where Chromium is: HARNESS_CHROMIUM, else Debian's /usr/bin/chromium. */
export function chromiumPath() {
  return process.env.HARNESS_CHROMIUM || '/usr/bin/chromium';
}

/**
 * The flags. SwiftShader everywhere (this machine has no GPU): WebGL2 through ANGLE on SwiftShader's
 * Vulkan, and --enable-unsafe-webgpu, without which Chromium offers no WebGPU adapter on Linux
 * (with it, Dawn's SwiftShader fallback adapter). --disable-gpu is not given: it removes that
 * adapter. The rest keeps a headless run from reaching the network or doing background work.
 */
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--no-first-run',
  '--disable-quic',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-default-apps',
  '--disable-extensions',
  '--use-angle=swiftshader',
  '--enable-unsafe-swiftshader',
  '--enable-unsafe-webgpu',
];

/** More Chromium flags from HARNESS_CHROMIUM_ARGS (space-separated), e.g. --disable-gpu to see the
 * browser runtimes without WebGL acceleration or a WebGPU adapter. */
export function extraArgs() {
  return (process.env.HARNESS_CHROMIUM_ARGS ?? '').split(/\s+/).filter(Boolean);
}

/**
 * A browser with one page of the harness open, and the server it came from.
 * @param {{onConsole?: (line: string) => void}} [options]
 */
export async function openPage(options = {}) {
  const executable = chromiumPath();
  if (!existsSync(executable)) {
    throw new Error(`Chromium not found at ${executable}: install Debian's chromium (make browser) or set HARNESS_CHROMIUM`);
  }
  const server = new StaticServer();
  const origin = await server.listen();
  const profile = mkdtempSync(join(tmpdir(), 'harness-chromium-'));
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: executable,
      headless: true,
      args: [...CHROMIUM_ARGS, ...extraArgs()],
      timeout: 60_000,
    });
  } catch (e) {
    await server.close();
    rmSync(profile, { recursive: true, force: true });
    throw e;
  }
  let page;
  try {
    page = await harnessPage(context, origin, options.onConsole, context.pages()[0]);
  } catch (e) {
    await context.close().catch(() => {});
    await server.close();
    rmSync(profile, { recursive: true, force: true });
    throw e;
  }
  const version = context.browser()?.version() ?? (await chromiumVersion(page));
  return {
    page,
    server,
    context,
    version,
    executable,
    profile,
    async close() {
      await context.close().catch(() => {});
      await server.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/**
 * A page of the harness (page/index.html) in the browser, ready when `window.harness` is.
 * @param {import('playwright-core').BrowserContext} context @param {string} origin
 * @param {((line: string) => void)|undefined} onConsole  where the page's console goes
 * @param {import('playwright-core').Page} [reuse]  a blank page to use instead of a new one
 */
export async function harnessPage(context, origin, onConsole, reuse) {
  const page = reuse ?? (await context.newPage());
  if (onConsole) {
    page.on('console', (m) => onConsole(`[page ${m.type()}] ${m.text()}`));
    page.on('pageerror', (e) => onConsole(`[page error] ${e.message}`));
  }
  await page.goto(`${origin}/page/index.html`);
  await page.waitForFunction(() => /** @type {any} */ (window).harness !== undefined, undefined, { timeout: 30_000 });
  return page;
}

/** Chromium's version from its user agent (a persistent context has no Browser object). @param {import('playwright-core').Page} page */
async function chromiumVersion(page) {
  const ua = await page.evaluate(() => navigator.userAgent);
  return /Chrome\/([\d.]+)/.exec(ua)?.[1] ?? 'unknown';
}

/**
 * Peak resident memory (VmHWM) of the browser's renderer processes, where the page, its JS heap,
 * the wasm memory and TF.js's CPU tensors live: the largest, in bytes, or null when /proc has none.
 * Chromium is a child of this process (Playwright runs in it), so its renderers are descendants.
 */
export function rendererPeakRss() {
  /** @type {Map<number, number>} pid → parent pid */
  const parent = new Map();
  /** @type {Map<number, string>} */
  const cmdline = new Map();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      parent.set(Number(entry), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
      cmdline.set(Number(entry), readFileSync(`/proc/${entry}/cmdline`, 'utf8'));
    } catch {
      // the process is gone
    }
  }
  /** @param {number} pid */
  const mine = (pid) => {
    for (let p = parent.get(pid), hops = 0; p !== undefined && hops < 16; p = parent.get(p), hops++) if (p === process.pid) return true;
    return false;
  };
  let peak = null;
  for (const [pid, cmd] of cmdline) {
    if (!cmd.includes('--type=renderer') || !mine(pid)) continue;
    try {
      const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (m) peak = Math.max(peak ?? 0, Number(m[1]) * 1024);
    } catch {
      // the process is gone
    }
  }
  return peak;
}
