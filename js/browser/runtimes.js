// The browser runtimes: name → the library and backend the page runs (../../harness/runners/table.py
// lists the same names, with the formats each takes).

export const BROWSER_RUNTIMES = {
  'browser-tfjs-cpu': { library: 'tfjs', backend: 'cpu' },
  'browser-tfjs-wasm': { library: 'tfjs', backend: 'wasm' },
  'browser-tfjs-webgl': { library: 'tfjs', backend: 'webgl' },
  'browser-tfjs-webgpu': { library: 'tfjs', backend: 'webgpu' },
  'browser-ort-wasm': { library: 'ort', backend: 'wasm' },
  'browser-ort-webgpu': { library: 'ort', backend: 'webgpu' },
};
