// .npy read/write (NumPy format 1.0–3.0 read, 1.0 write; little-endian, C order).
//
// Why not an npm package: the one maintained choice (npyjs 1.2) pads headers to 8 bytes instead of
// the 64 the format asks for, does not check the data length against the shape, ignores
// fortran_order, hands back booleans as a JS Array, and pulls an HTTP client we never use. The format
// is small enough to implement exactly, and the tests hold it to what NumPy writes and reads.

import { readFileSync, writeFileSync } from 'node:fs';

/**
 * @typedef {Float32Array|Float64Array|Int8Array|Uint8Array|Int16Array|Uint16Array|Int32Array|Uint32Array|BigInt64Array|BigUint64Array} TypedArray
 * @typedef {{dtype: string, shape: number[], data: TypedArray}} NdArray
 *   `dtype` is NumPy's name (`float32`, `bool`, ...); `bool` data is a Uint8Array of 0/1, `float16`
 *   a Uint16Array of the raw bits.
 */

/**
 * NumPy dtype name → [descr without byte order, TypedArray constructor].
 * @type {Record<string, [string, any]>}
 */
const DTYPES = {
  bool: ['b1', Uint8Array],
  int8: ['i1', Int8Array],
  uint8: ['u1', Uint8Array],
  int16: ['i2', Int16Array],
  uint16: ['u2', Uint16Array],
  int32: ['i4', Int32Array],
  uint32: ['u4', Uint32Array],
  int64: ['i8', BigInt64Array],
  uint64: ['u8', BigUint64Array],
  float16: ['f2', Uint16Array], // raw IEEE half bits: JS has no Float16Array in Node 20
  float32: ['f4', Float32Array],
  float64: ['f8', Float64Array],
};
const BY_CODE = Object.fromEntries(Object.entries(DTYPES).map(([name, [code]]) => [code, name]));
const MAGIC = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]); // \x93NUMPY

/** The dtypes this module reads and writes. */
export const SUPPORTED_DTYPES = Object.keys(DTYPES);

/**
 * Parse the bytes of a .npy file.
 * @param {Uint8Array} bytes
 * @returns {NdArray}
 */
export function parseNpy(bytes) {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buf.length < 10 || !buf.subarray(0, 6).equals(MAGIC)) throw new Error('not a .npy file (bad magic)');
  const major = buf[6];
  let headerLen, start;
  if (major === 1) [headerLen, start] = [buf.readUInt16LE(8), 10];
  else if (major === 2 || major === 3) [headerLen, start] = [buf.readUInt32LE(8), 12];
  else throw new Error(`unsupported .npy format version ${major}.${buf[7]}`);
  if (buf.length < start + headerLen) throw new Error('truncated .npy header');
  const header = buf.subarray(start, start + headerLen).toString(major === 3 ? 'utf8' : 'latin1');

  const descr = /'descr'\s*:\s*'([^']*)'/.exec(header)?.[1];
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape'\s*:\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) {
    throw new Error(`malformed .npy header: ${header.trim()}`);
  }
  const shape = shapeText.split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  if (shape.some((d) => !Number.isInteger(d) || d < 0)) throw new Error(`malformed .npy shape (${shapeText})`);

  const order = descr[0];
  const code = '<>|='.includes(order) ? descr.slice(1) : descr;
  const width = /^S(\d+)$/.exec(code);
  if (width) return parseFixedBytes(buf, start + headerLen, shape, Number(width[1]));
  const dtype = BY_CODE[code];
  if (dtype === undefined) throw new Error(`unsupported .npy dtype '${descr}'`);
  const [, Ctor] = DTYPES[dtype];
  if (order === '>' && Ctor.BYTES_PER_ELEMENT > 1) throw new Error(`big-endian .npy data ('${descr}') is not supported`);
  const size = shape.reduce((a, b) => a * b, 1);
  if (fortran === 'True' && shape.filter((d) => d > 1).length > 1) {
    throw new Error('Fortran-order .npy data is not supported (write it C-contiguous)');
  }

  const offset = start + headerLen;
  const nbytes = size * Ctor.BYTES_PER_ELEMENT;
  if (buf.length - offset !== nbytes) {
    throw new Error(`.npy data is ${buf.length - offset} bytes, expected ${nbytes} for ${dtype} of shape [${shape.join(', ')}]`);
  }
  // Copy into a fresh ArrayBuffer: a file's Buffer may be a slice of Node's shared pool, at an
  // offset the TypedArray's alignment forbids.
  const data = new Ctor(buf.buffer.slice(buf.byteOffset + offset, buf.byteOffset + offset + nbytes));
  return { dtype, shape, data };
}

/**
 * NumPy fixed-width bytes (`|S<n>`, how the harness writes string tensors such as serialized
 * tf.Example protos): one Uint8Array per element, trailing NUL padding removed as NumPy does.
 * @param {Buffer} buf @param {number} offset @param {number[]} shape @param {number} width
 * @returns {{dtype: string, shape: number[], data: any}}
 */
function parseFixedBytes(buf, offset, shape, width) {
  const size = shape.reduce((a, b) => a * b, 1);
  if (width < 1) throw new Error(`malformed .npy dtype 'S${width}'`);
  if (buf.length - offset !== size * width) {
    throw new Error(`.npy data is ${buf.length - offset} bytes, expected ${size * width} for S${width} of shape [${shape.join(', ')}]`);
  }
  const data = [];
  for (let i = 0; i < size; i++) {
    let end = offset + (i + 1) * width;
    while (end > offset + i * width && buf[end - 1] === 0) end--;
    data.push(Uint8Array.from(buf.subarray(offset + i * width, end)));
  }
  return { dtype: 'bytes', shape, data };
}

/**
 * Serialise an array as a format 1.0 .npy file, byte-identical to numpy.save.
 * @param {NdArray} array
 * @returns {Buffer}
 */
export function formatNpy({ dtype, shape, data }) {
  const entry = DTYPES[dtype];
  if (entry === undefined) throw new Error(`unsupported dtype ${dtype}: expected one of ${SUPPORTED_DTYPES.join(', ')}`);
  const [code, Ctor] = entry;
  const size = shape.reduce((a, b) => a * b, 1);
  if (data.length !== size) throw new Error(`${data.length} elements do not fill shape [${shape.join(', ')}]`);
  const order = Ctor.BYTES_PER_ELEMENT === 1 ? '|' : '<';
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let header = `{'descr': '${order}${code}', 'fortran_order': False, 'shape': ${shapeText}, }`;
  // Pad with spaces so that magic + version + length + header + '\n' is a multiple of 64.
  header += ' '.repeat(64 - ((10 + header.length + 1) % 64)) + '\n';
  const body = data instanceof Ctor ? data : Ctor.from(/** @type {any} */ (data));
  const head = Buffer.alloc(10);
  MAGIC.copy(head);
  head[6] = 1;
  head[7] = 0;
  head.writeUInt16LE(header.length, 8);
  return Buffer.concat([head, Buffer.from(header, 'latin1'), Buffer.from(body.buffer, body.byteOffset, body.byteLength)]);
}

/** @param {string} path @returns {NdArray} */
export function readNpy(path) {
  return parseNpy(readFileSync(path));
}

/** @param {string} path @param {NdArray} array */
export function writeNpy(path, array) {
  writeFileSync(path, formatNpy(array));
}
