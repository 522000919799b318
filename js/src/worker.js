#!/usr/bin/env node
// The Node runner worker: `node js/src/worker.js --runtime <name>` serves one runtime over the
// runner protocol (JSON-RPC 2.0 lines on stdin/stdout, logs on stderr; see src/protocol.js).
//
// An error the worker did not expect outside a request (an unhandled rejection or exception) is
// left to Node's default: the stack goes to stderr and the process exits non-zero, which the
// harness records as a crash.

import { protectStdout, Worker } from './protocol.js';

/** Runtime name → how to make it. Each imports its libraries lazily: one worker, one runtime. */
const RUNTIMES = {
  'node-tfjs-cpu': async () => (await import('./runtimes/tfjs.js')).createTfjs('cpu'),
  'node-tfjs-wasm': async () => (await import('./runtimes/tfjs.js')).createTfjs('wasm'),
  'node-tfjs-node': async () => (await import('./runtimes/tfjs.js')).createTfjs('tensorflow'),
  'node-ort': async () => (await import('./runtimes/ort.js')).createOrt('node'),
  'node-ort-web': async () => (await import('./runtimes/ort.js')).createOrt('web'),
};

const USAGE = `usage: node js/src/worker.js --runtime {${Object.keys(RUNTIMES).join(',')}}`;

/** @param {string[]} argv */
function runtimeName(argv) {
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--runtime') return argv[i + 1];
    if (argv[i].startsWith('--runtime=')) return argv[i].slice('--runtime='.length);
  }
  return undefined;
}

const name = runtimeName(process.argv.slice(2));
if (name === undefined || !(name in RUNTIMES)) {
  console.error(name === undefined ? USAGE : `unknown runtime ${JSON.stringify(name)}: expected one of ${Object.keys(RUNTIMES).join(', ')}`);
  process.exit(2);
}

// Set the protocol channel aside before any framework is imported: importing one may already print.
const write = protectStdout();
let runtime;
try {
  runtime = await RUNTIMES[/** @type {keyof RUNTIMES} */ (name)]();
} catch (e) {
  console.error(`worker ${name} could not start its runtime:`, e);
  process.exit(1);
}
await new Worker(runtime).serve(process.stdin, write);
// Shutdown or end of input. Exit now: thread pools of the runtimes (wasm workers) would keep the
// event loop alive. Writes to a pipe or file are synchronous on Linux, so the last answer is out.
process.exit(0);
