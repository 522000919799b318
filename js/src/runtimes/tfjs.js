// Runtimes node-tfjs-cpu, node-tfjs-wasm, node-tfjs-node: TensorFlow.js 4.22 in Node on its cpu
// (plain JS), wasm (XNNPACK in WebAssembly) and tensorflow (tfjs-node: native libtensorflow, here
// built against the TF wheel's library by setup.sh) backends.
//
// TF.js graph models (format tfjs_graph) load on all three; SavedModels (format savedmodel) only on
// tfjs-node, which runs them through the TF C API like tfgo does.

import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { oneLine, ProtocolError } from '../protocol.js';
import { packageDir, packageVersion, requireDtypes, unwrap } from './common.js';
import { checkArtifact, checkInside } from './contain.js';
import { GraphSession, guarded, LayersSession, readBack, toTensors } from './tfjs_calls.js';

/** TF.js tensors are float32, int32, bool (and string, complex64): no int64, float64, int8 or uint8. */
const TFJS_DTYPES = /** @type {const} */ (['float32', 'int32', 'bool']);

/**
 * @typedef {import('../protocol.js').NdArray} NdArray
 * @typedef {import('../protocol.js').Session} Session
 * @typedef {'cpu'|'wasm'|'tensorflow'} Backend
 */

/**
 * An IOHandler that reads model.json and its weight shards from disk. Plain @tensorflow/tfjs has
 * no file:// loader in Node (only tfjs-node registers one), so all three backends load through
 * this one, and load the same bytes the same way. A weights path that leads out of the model's
 * folder (`../`, an absolute path, a link) is refused: the manifest is the model's, not ours.
 * @param {any} tf
 * @param {string} modelJson
 * @param {string} root the artifact folder, resolved (checkArtifact)
 */
function fileHandler(tf, modelJson, root) {
  const folder = dirname(modelJson);
  return {
    load: async () => {
      const json = JSON.parse(await readFile(modelJson, 'utf8'));
      return tf.io.getModelArtifactsForJSON(json, async (/** @type {any[]} */ manifest) => {
        const specs = [];
        const buffers = [];
        for (const group of manifest) {
          specs.push(...group.weights);
          for (const p of group.paths) {
            const b = await readFile(checkInside(root, folder, p, 'weights path'));
            buffers.push(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
          }
        }
        return [specs, buffers];
      });
    },
  };
}

/** A SavedModel signature in tfjs-node, fed and fetched by the signature's keys, like Python TF. */
class SavedModelSession {
  /** @param {any} tf @param {any} model @param {string[]} outputs */
  constructor(tf, model, outputs) {
    this.tf = tf;
    this.model = model;
    this.outputs = outputs;
  }

  /** @param {Record<string, NdArray>} feeds */
  run(feeds) {
    const inputs = toTensors(this.tf, feeds);
    const out = guarded(this.tf, inputs, () => this.model.predict(inputs));
    const missing = this.outputs.filter((n) => !(n in out));
    if (missing.length) {
      this.tf.dispose([...Object.values(inputs), ...Object.values(out)]);
      throw new Error(`signature returned [${Object.keys(out)}], missing [${missing}]`);
    }
    try {
      return /** @type {Record<string, NdArray>} */ (readBack(this.tf, inputs, this.outputs, this.outputs.map((n) => out[n])));
    } finally {
      this.tf.dispose(Object.values(out)); // outputs of the signature the artifact does not list
    }
  }

  close() {
    this.model.dispose();
  }
}

/**
 * @param {Backend} backend
 * @returns {Promise<import('../protocol.js').Runtime>}
 */
export async function createTfjs(backend) {
  // As the Python tf worker: libtensorflow's info lines (CPU features, SavedModel loading) off.
  if (backend === 'tensorflow') process.env.TF_CPP_MIN_LOG_LEVEL ??= '2';
  const tf = unwrap(
    backend === 'tensorflow' ? await import('@tensorflow/tfjs-node') : await import('@tensorflow/tfjs'),
    'loadGraphModel',
  );
  if (backend === 'wasm') {
    const wasm = unwrap(await import('@tensorflow/tfjs-backend-wasm'), 'setWasmPaths');
    // Node cannot fetch the .wasm binaries from a CDN here: point the backend at the package's own.
    wasm.setWasmPaths(join(packageDir('@tensorflow/tfjs-backend-wasm'), 'dist') + '/');
  }
  if (!(await tf.setBackend(backend))) throw new Error(`TF.js backend ${backend} failed to initialise`);
  await tf.ready();

  /** @type {Record<string, string>} */
  const versions = { '@tensorflow/tfjs': packageVersion('@tensorflow/tfjs'), node: process.versions.node };
  if (backend === 'wasm') {
    versions['@tensorflow/tfjs-backend-wasm'] = packageVersion('@tensorflow/tfjs-backend-wasm');
    const features = ['simd', 'threads'].filter((f) => tf.env().getBool(f === 'simd' ? 'WASM_HAS_SIMD_SUPPORT' : 'WASM_HAS_MULTITHREAD_SUPPORT'));
    versions.wasm_features = features.join(',') || 'none';
  }
  if (backend === 'tensorflow') {
    versions['@tensorflow/tfjs-node'] = packageVersion('@tensorflow/tfjs-node');
    versions.tensorflow = tf.backend().binding.TF_Version;
  }

  const name = { cpu: 'node-tfjs-cpu', wasm: 'node-tfjs-wasm', tensorflow: 'node-tfjs-node' }[backend];
  const formats = backend === 'tensorflow' ? ['tfjs_graph', 'tfjs_layers', 'savedmodel'] : ['tfjs_graph', 'tfjs_layers'];

  return {
    name,
    formats,
    versions: () => versions,
    // A SavedModel signature is called by its keys (as in Python TF); a graph model by tensor names.
    address: (fmt) => (fmt === 'savedmodel' ? 'name' : 'stored_name'),
    async load(artifact, modelPath, fmt) {
      // Threads are not settable per model in any of the three backends (cpu is single-threaded
      // JS; wasm and libtensorflow size their pools once per process), so `threads` is ignored.
      // A SavedModel in tfjs-node (libtensorflow) also takes string tensors (serialized protos).
      requireDtypes(artifact, fmt === 'savedmodel' ? [...TFJS_DTYPES, 'bytes'] : TFJS_DTYPES, 'TF.js');
      const root = checkArtifact(artifact, modelPath);
      if (fmt === 'tfjs_graph') {
        const model = await tf.loadGraphModel(fileHandler(tf, modelPath, root));
        return new GraphSession(tf, model, artifact.outputs.map((s) => s.stored_name));
      }
      if (fmt === 'tfjs_layers') {
        let model;
        try {
          model = await tf.loadLayersModel(fileHandler(tf, modelPath, root));
        } catch (e) {
          throw new ProtocolError('load_failed', `TF.js layers model ${modelPath}: ${e instanceof Error ? e.constructor.name : 'Error'}: ${oneLine(e)}`);
        }
        return new LayersSession(tf, model, artifact.inputs.map((s) => s.stored_name), artifact.outputs.map((s) => s.stored_name));
      }
      if (fmt === 'savedmodel') {
        const tag = artifact.extra?.tag ?? 'serve';
        // A tag set is comma-separated ("serve,extra"); a meta graph is the one with exactly that set.
        const tags = String(tag).split(',').filter((t) => t);
        const sameSet = (/** @type {string[]} */ have) => have.length === tags.length && tags.every((t) => have.includes(t));
        const signature = /** @type {string} */ (artifact.signature);
        let model;
        try {
          // Check the signature first, to say what there is (tfjs-node only says what is missing).
          const metas = await tf.node.getMetaGraphsFromSavedModel(modelPath);
          const meta = metas.find((/** @type {any} */ m) => sameSet(m.tags));
          const signatures = Object.keys(meta?.signatureDefs ?? {}).sort();
          if (meta && !signatures.includes(signature)) {
            throw new ProtocolError('load_failed', undefined, 'unknown_signature', { field: 'signature', path: modelPath, expected: signatures, got: signature });
          }
          model = await tf.node.loadSavedModel(modelPath, tags, signature);
        } catch (e) {
          if (e instanceof ProtocolError) throw e;
          throw new ProtocolError('load_failed', `SavedModel ${modelPath} (tag '${tag}'): ${e instanceof Error ? e.constructor.name : 'Error'}: ${oneLine(e)}`);
        }
        return new SavedModelSession(tf, model, artifact.outputs.map((s) => s.name));
      }
      throw new ProtocolError('unsupported', `format ${fmt}`);
    },
  };
}

/** For tests: the TF.js module a runtime of this process uses. */
export async function tfjsModule(/** @type {Backend} */ backend) {
  return unwrap(backend === 'tensorflow' ? await import('@tensorflow/tfjs-node') : await import('@tensorflow/tfjs'), 'loadGraphModel');
}
