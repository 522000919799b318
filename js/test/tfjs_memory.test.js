// TF.js frees every tensor of an inference: the worker disposes inputs and outputs each iteration,
// so the engine's tensor count stays flat however many iterations a benchmark asks for; and
// closing a session frees what loading it took: a graph model's weight tensors, a SavedModel's
// native TensorFlow session in tfjs-node (its weights live there, not in the engine's count).

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { createTfjs, tfjsModule } from '../src/runtimes/tfjs.js';
import { artifact, requirement, tfjsNodeBuilt } from '../test_support/helpers.js';

/** @param {string} fixture @param {string} format */
function meta(fixture, format) {
  const folder = artifact(fixture, format);
  const a = JSON.parse(readFileSync(join(folder, 'artifact.json'), 'utf8'));
  return { a, path: join(folder, a.path) };
}

const image = { dtype: 'float32', shape: [1, 28, 28, 1], data: new Float32Array(784).fill(0.5) };
const TFJS_NODE = requirement(tfjsNodeBuilt(), 'the tfjs-node binding is not built: run js/setup.sh');

// Sequential on purpose: the three backends share one TF.js engine in this process.
for (const [backend, formats] of /** @type {const} */ ([['cpu', ['tfjs_graph']], ['wasm', ['tfjs_graph']], ['tensorflow', ['tfjs_graph', 'savedmodel']]])) {
  const needs = backend === 'tensorflow' ? TFJS_NODE : requirement(true, '');
  for (const format of formats) {
    test(`${backend} ${format}: tensor count stays flat over iterations, and unload frees the model`, { skip: needs.skip }, async () => {
      needs.check();
      const runtime = await createTfjs(backend);
      const tf = await tfjsModule(backend);
      assert.equal(tf.getBackend(), backend);
      /** Native SavedModel sessions held by tfjs-node (0 on the other backends: they have none). */
      const savedModels = () => (backend === 'tensorflow' ? tf.node.getNumOfSavedModels() : 0);
      const { a, path } = meta('mnist_cnn', format);
      const before = { ...tf.memory(), savedModels: savedModels() };

      const session = await runtime.load(a, path, format, 'cpu', 0);
      const loaded = { ...tf.memory(), savedModels: savedModels() };
      if (format === 'savedmodel') {
        assert.equal(loaded.savedModels, before.savedModels + 1, 'loading a SavedModel opens one native session');
      } else {
        assert.ok(loaded.numTensors > before.numTensors, `loading holds the weights as tensors (${before.numTensors} → ${loaded.numTensors})`);
      }

      const key = format === 'savedmodel' ? 'image' : 'image:0';
      const once = async () => session.run({ [key]: image });
      await once();
      const { numTensors, numBytes } = tf.memory();
      for (let i = 0; i < 20; i++) await once();
      assert.equal(tf.memory().numTensors, numTensors);
      assert.equal(tf.memory().numBytes, numBytes);

      assert.equal(typeof session.close, 'function', 'a TF.js session has close()');
      await session.close?.();
      // Back to where it was before the load: nothing the model took is left behind.
      assert.equal(savedModels(), before.savedModels, 'unload closes the native SavedModel session');
      assert.equal(tf.memory().numTensors, before.numTensors, 'unload frees every tensor the model held');
      assert.equal(tf.memory().numBytes, before.numBytes, 'unload frees every byte the model held');
    });
  }
}
