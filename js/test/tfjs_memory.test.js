// TF.js frees every tensor of an inference: the worker disposes inputs and outputs each iteration,
// so the engine's tensor count stays flat however many iterations a benchmark asks for.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { createTfjs, tfjsModule } from '../src/runtimes/tfjs.js';
import { artifact, tfjsNodeBuilt } from '../test_support/helpers.js';

/** @param {string} fixture @param {string} format */
function meta(fixture, format) {
  const folder = artifact(fixture, format);
  const a = JSON.parse(readFileSync(join(folder, 'artifact.json'), 'utf8'));
  return { a, path: join(folder, a.path) };
}

const image = { dtype: 'float32', shape: [1, 28, 28, 1], data: new Float32Array(784).fill(0.5) };

// Sequential on purpose: the three backends share one TF.js engine in this process.
for (const [backend, formats] of /** @type {const} */ ([['cpu', ['tfjs_graph']], ['wasm', ['tfjs_graph']], ['tensorflow', ['tfjs_graph', 'savedmodel']]])) {
  for (const format of formats) {
    test(`${backend} ${format}: tensor count stays flat over iterations`, { skip: backend === 'tensorflow' && !tfjsNodeBuilt() && 'tfjs-node not built' }, async () => {
      const runtime = await createTfjs(backend);
      const tf = await tfjsModule(backend);
      assert.equal(tf.getBackend(), backend);
      const { a, path } = meta('mnist_cnn', format);
      const session = await runtime.load(a, path, format, 'cpu', 0);
      const key = format === 'savedmodel' ? 'image' : 'image:0';
      const once = async () => session.run({ [key]: image });
      await once();
      const { numTensors, numBytes } = tf.memory();
      for (let i = 0; i < 20; i++) await once();
      assert.equal(tf.memory().numTensors, numTensors);
      assert.equal(tf.memory().numBytes, numBytes);
      await session.close?.();
      assert.ok(tf.memory().numTensors < numTensors || format === 'savedmodel', 'unload frees the weights');
    });
  }
}
