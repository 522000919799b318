// Runtimes node-ort and node-ort-web: ONNX Runtime 1.30 in Node, as the native binding
// (onnxruntime-node, CPU execution provider) and as WebAssembly (onnxruntime-web, the wasm
// execution provider that browsers run), on the ONNX formats.

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { packageDir, packageVersion, requireDtypes, unwrap } from './common.js';
import { checkArtifact } from './contain.js';

/** Tensor types both ONNX Runtime packages take and give as typed arrays, named as NumPy names them. */
const ORT_DTYPES = /** @type {const} */ ([
  'float32', 'float64', 'float16', 'int8', 'uint8', 'int16', 'uint16', 'int32', 'uint32', 'int64', 'uint64', 'bool',
]);

/**
 * @typedef {import('../protocol.js').NdArray} NdArray
 * @typedef {'node'|'web'} Flavour
 */

/**
 * @param {Flavour} flavour
 * @returns {Promise<import('../protocol.js').Runtime>}
 */
export async function createOrt(flavour) {
  const pkg = flavour === 'node' ? 'onnxruntime-node' : 'onnxruntime-web';
  const ort = unwrap(flavour === 'node' ? await import('onnxruntime-node') : await import('onnxruntime-web'), 'InferenceSession');
  // As the Python ort worker: only errors in the log (it goes to stderr either way).
  ort.env.logLevel = 'error';
  if (flavour === 'web') {
    // The .wasm binaries come from the package, not from a CDN.
    ort.env.wasm.wasmPaths = join(packageDir('onnxruntime-web'), 'dist') + '/';
  }
  /** The thread count the wasm backend was started with; it cannot change once a session exists. */
  let wasmThreads = 0;

  return {
    name: flavour === 'node' ? 'node-ort' : 'node-ort-web',
    formats: ['onnx13', 'onnx18'],
    versions: () => ({
      [pkg]: packageVersion(pkg),
      'onnxruntime-common': packageVersion('onnxruntime-common'),
      node: process.versions.node,
    }),
    async load(artifact, modelPath, _fmt, _device, threads) {
      requireDtypes(artifact, ORT_DTYPES, 'ONNX Runtime');
      // Links out of the folder are refused here; ONNX Runtime itself refuses external data
      // locations with ../ or an absolute path.
      checkArtifact(artifact, modelPath);
      /** @type {Record<string, any>} */
      const options = { graphOptimizationLevel: 'all', logSeverityLevel: 3 };
      let session;
      if (flavour === 'node') {
        options.executionProviders = ['cpu'];
        if (threads) Object.assign(options, { intraOpNumThreads: threads, interOpNumThreads: 1 });
        session = await ort.InferenceSession.create(modelPath, options);
      } else {
        options.executionProviders = ['wasm'];
        if (!wasmThreads) {
          if (threads) ort.env.wasm.numThreads = threads;
          wasmThreads = ort.env.wasm.numThreads ?? 1;
        } else if (threads && threads !== wasmThreads) {
          console.error(`node-ort-web: threads=${threads} ignored, the wasm backend runs ${wasmThreads} thread(s) for the life of the worker`);
        }
        session = await ort.InferenceSession.create(new Uint8Array(await readFile(modelPath)), options);
      }
      const outputNames = [...session.outputNames];
      return {
        /** @param {Record<string, NdArray>} feeds */
        async run(feeds) {
          /** @type {Record<string, any>} */
          const inputs = {};
          for (const [name, a] of Object.entries(feeds)) inputs[name] = new ort.Tensor(a.dtype, a.data, a.shape);
          const out = await session.run(inputs, outputNames);
          /** @type {Record<string, NdArray>} */
          const result = {};
          for (const name of outputNames) {
            const t = out[name];
            result[name] = { dtype: t.type, shape: [...t.dims], data: t.data };
          }
          return result;
        },
        close: () => session.release(),
      };
    },
  };
}
