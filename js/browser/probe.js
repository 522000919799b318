#!/usr/bin/env node
// `node js/browser/probe.js`: what the browser runtimes find in this machine's Chromium, as one JSON
// object on stdout, for `harness doctor` (harness/browser.py): the Chromium binary and its version,
// WebGL and the WebGPU adapter as the page sees them, and for each browser runtime whether its
// library starts on its backend in the page (each in a page of its own), with the reason if not.
// Exit 0 with {"chromium": {"ok": false, "reason": ...}} when Chromium cannot be started.

import { oneLine } from '../src/protocol.js';
import { chromiumPath, harnessPage, openPage } from './chromium.js';
import { BROWSER_RUNTIMES } from './runtimes.js';

const executable = chromiumPath();
/** @type {Record<string, any>} */
const out = { chromium: { executable, ok: false }, runtimes: {} };
let browser;
try {
  browser = await openPage();
} catch (e) {
  out.chromium.reason = oneLine(e);
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(0);
}
out.chromium = { executable, ok: true, version: browser.version };
const probe = await browser.page.evaluate(() => /** @type {any} */ (window).harness.probe());
Object.assign(out, probe.ok ?? { probe_error: probe.error });
for (const [name, { library, backend }] of Object.entries(BROWSER_RUNTIMES)) {
  const page = await harnessPage(browser.context, browser.server.origin, undefined);
  const r = await page.evaluate(([l, b]) => /** @type {any} */ (window).harness.init(l, b), /** @type {const} */ ([library, backend]));
  if (r.error !== undefined) out.runtimes[name] = { ok: false, reason: r.error };
  else if (r.ok.unavailable) out.runtimes[name] = { ok: false, reason: r.ok.unavailable };
  else out.runtimes[name] = { ok: true, precision: r.ok.precision, ...(r.ok.wasm ? { wasm: r.ok.wasm } : {}) };
  await page.close();
}
await browser.close();
process.stdout.write(JSON.stringify(out) + '\n');
process.exit(0);
