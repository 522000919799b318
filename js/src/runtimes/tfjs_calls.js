// How a TF.js model is called, in Node (./tfjs.js) and in the browser page (../../browser/page/page.js,
// which imports this file from the static server's /src mount): feeds to tensors, the call guarded so its
// inputs are freed whatever happens, outputs read back to host arrays (part of the timed call) and every
// tensor of the call freed, so the tensor count stays flat across iterations. Nothing here may import a
// Node module: it runs in the page as it is.

/**
 * @typedef {import('../protocol.js').NdArray} NdArray
 */

/** @param {any} tf @param {Record<string, NdArray>} feeds @returns {Record<string, any>} */
export function toTensors(tf, feeds) {
  /** @type {Record<string, any>} */
  const inputs = {};
  for (const [name, a] of Object.entries(feeds)) {
    inputs[name] = a.dtype === 'bytes' ? tf.tensor(a.data, a.shape, 'string') : tf.tensor(a.data, a.shape, a.dtype);
  }
  return inputs;
}

/**
 * A model call on `inputs` that frees them when it throws or its promise rejects.
 * @param {any} tf @param {Record<string, any>} inputs @param {() => any} call
 */
export function guarded(tf, inputs, call) {
  const free = (/** @type {unknown} */ e) => {
    tf.dispose(Object.values(inputs));
    throw e;
  };
  try {
    const out = call();
    return out instanceof Promise ? out.catch(free) : out;
  } catch (e) {
    return free(e);
  }
}

/**
 * Output tensors to host arrays and every tensor of the call freed: `dataSync()`, or `await data()`
 * where the backend cannot read back synchronously (WebGPU).
 * @param {any} tf @param {Record<string, any>} inputs @param {string[]} names @param {any[]} outputs
 * @param {boolean} [sync]
 * @returns {Record<string, NdArray>|Promise<Record<string, NdArray>>}
 */
export function readBack(tf, inputs, names, outputs, sync = true) {
  const free = () => {
    tf.dispose(outputs);
    tf.dispose(Object.values(inputs));
  };
  /** @param {any[]} datas */
  const arrays = (datas) => Object.fromEntries(names.map((n, i) => [n, { dtype: outputs[i].dtype, shape: outputs[i].shape, data: datas[i] }]));
  if (sync) {
    try {
      return arrays(outputs.map((t) => t.dataSync()));
    } finally {
      free();
    }
  }
  return Promise.all(outputs.map((t) => t.data())).then(
    (datas) => {
      free();
      return arrays(datas);
    },
    (e) => {
      free();
      throw e;
    },
  );
}

/** @param {any} out @returns {any[]} */
const list = (out) => (Array.isArray(out) ? out : [out]);

/** What both kinds of TF.js model share: the model, its output names, outputs read back to the host. */
class TfjsSession {
  /** @param {any} tf @param {any} model @param {string[]} outputs @param {boolean} [sync] */
  constructor(tf, model, outputs, sync = true) {
    this.tf = tf;
    this.model = model;
    this.outputs = outputs;
    this.sync = sync;
  }

  /** @param {Record<string, any>} inputs @param {any} out */
  toHost(inputs, out) {
    return readBack(this.tf, inputs, this.outputs, list(out), this.sync);
  }

  close() {
    this.model.dispose();
  }
}

/** A TF.js graph model, fed and fetched by the converter's tensor names (`x:0`, `Identity:0`). */
export class GraphSession extends TfjsSession {
  /** @param {any} tf @param {any} model @param {string[]} outputs @param {boolean} [sync] */
  constructor(tf, model, outputs, sync = true) {
    super(tf, model, outputs, sync);
    this.async = false;
  }

  /** @param {Record<string, NdArray>} feeds */
  run(feeds) {
    if (this.async) return this.runAsync(feeds);
    const inputs = toTensors(this.tf, feeds);
    let out;
    try {
      out = guarded(this.tf, inputs, () => this.model.execute(inputs, this.outputs));
    } catch (e) {
      // Models with control flow or dynamic shapes refuse the synchronous executor and say so on
      // the first call; they are then run with executeAsync from here on.
      if (e instanceof Error && /executeAsync/.test(e.message)) {
        this.async = true;
        return this.runAsync(feeds);
      }
      throw e;
    }
    return this.toHost(inputs, out);
  }

  /** @param {Record<string, NdArray>} feeds */
  async runAsync(feeds) {
    const inputs = toTensors(this.tf, feeds);
    const out = await guarded(this.tf, inputs, () => this.model.executeAsync(inputs, this.outputs));
    return this.toHost(inputs, out);
  }
}

/** A TF.js layers model (a converted Keras model): inputs to `predict` in order, outputs in order. */
export class LayersSession extends TfjsSession {
  /** @param {any} tf @param {any} model @param {string[]} inputs @param {string[]} outputs @param {boolean} [sync] */
  constructor(tf, model, inputs, outputs, sync = true) {
    super(tf, model, outputs, sync);
    this.inputs = inputs;
  }

  /** @param {Record<string, NdArray>} feeds */
  run(feeds) {
    const inputs = toTensors(this.tf, feeds);
    const ordered = this.inputs.map((n) => inputs[n]);
    const out = guarded(this.tf, inputs, () => this.model.predict(ordered.length === 1 ? ordered[0] : ordered));
    return this.toHost(inputs, out);
  }
}
