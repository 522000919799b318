// .npy read/write, held to NumPy: files NumPy wrote are read back exactly, files written here are
// byte-identical to numpy.save and read back by NumPy exactly.

import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { formatNpy, parseNpy, readNpy, writeNpy } from '../src/npy.js';
import { python, scratch } from '../test_support/helpers.js';

const dir = scratch();

/** Arrays NumPy writes, one per dtype and a few shapes: name → Python expression. */
const CASES = {
  float32: "np.array([[1.5, -2.25, np.inf], [np.nan, 0.0, -0.0]], np.float32)",
  float64: "np.array([np.pi, -1e300, 5e-324], np.float64)",
  float16: "np.array([1.0, -2.5, 65504.0], np.float16)",
  int8: "np.array([-128, 0, 127], np.int8).reshape(3, 1)",
  uint8: "np.arange(256, dtype=np.uint8).reshape(4, 4, 16)",
  int16: "np.array([-32768, 32767], np.int16)",
  uint16: "np.array([0, 65535], np.uint16)",
  int32: "np.array([-2**31, 2**31 - 1, 7], np.int32)",
  uint32: "np.array([0, 2**32 - 1], np.uint32)",
  int64: "np.array([-2**63, 2**63 - 1, 2**53 + 1], np.int64)",
  uint64: "np.array([0, 2**64 - 1], np.uint64)",
  bool: "np.array([[True, False], [False, True]])",
  scalar: "np.float32(3.5).reshape(())",
  empty: "np.zeros((0, 3), np.float32)",
  wide_header: "np.zeros((1,) * 30, np.float32)",
};

test('reads what NumPy wrote, and writes it back byte for byte', () => {
  const lines = Object.entries(CASES).map(([n, e]) => `np.save(${JSON.stringify(join(dir, `${n}.npy`))}, ${e})`);
  python(`import numpy as np\n${lines.join('\n')}`);
  for (const name of Object.keys(CASES)) {
    const path = join(dir, `${name}.npy`);
    const a = readNpy(path);
    const again = formatNpy(a);
    assert.deepEqual(again, readFileSync(path), `${name}: bytes differ from numpy.save`);
  }
  assert.deepEqual(readNpy(join(dir, 'int64.npy')).data, BigInt64Array.from([-(2n ** 63n), 2n ** 63n - 1n, 2n ** 53n + 1n]));
  const f = readNpy(join(dir, 'float32.npy'));
  assert.equal(f.dtype, 'float32');
  assert.deepEqual(f.shape, [2, 3]);
  assert.deepEqual([...f.data], [1.5, -2.25, Infinity, NaN, 0, -0]);
  assert.deepEqual(readNpy(join(dir, 'bool.npy')), { dtype: 'bool', shape: [2, 2], data: Uint8Array.from([1, 0, 0, 1]) });
  assert.deepEqual(readNpy(join(dir, 'scalar.npy')).shape, []);
  assert.deepEqual(readNpy(join(dir, 'empty.npy')).shape, [0, 3]);
});

test('NumPy reads what was written here', () => {
  const arrays = {
    f32: { dtype: 'float32', shape: [2, 2], data: Float32Array.from([1, 2.5, -3, 1e-7]) },
    f64: { dtype: 'float64', shape: [3], data: Float64Array.from([Math.PI, -0, 1e300]) },
    i8: { dtype: 'int8', shape: [2], data: Int8Array.from([-128, 127]) },
    u8: { dtype: 'uint8', shape: [1, 3], data: Uint8Array.from([0, 128, 255]) },
    i32: { dtype: 'int32', shape: [2], data: Int32Array.from([-(2 ** 31), 2 ** 31 - 1]) },
    i64: { dtype: 'int64', shape: [2], data: BigInt64Array.from([-(2n ** 63n), 2n ** 53n + 1n]) },
    b: { dtype: 'bool', shape: [3], data: Uint8Array.from([1, 0, 1]) },
    s: { dtype: 'float32', shape: [], data: Float32Array.from([7]) },
  };
  for (const [name, a] of Object.entries(arrays)) writeNpy(join(dir, `js-${name}.npy`), /** @type {any} */ (a));
  const out = python(`
import numpy as np
d = ${JSON.stringify(dir)}
def load(n):
    a = np.load(f"{d}/js-{n}.npy", allow_pickle=False)
    assert a.flags.c_contiguous
    return a
assert load('f32').dtype == np.float32 and load('f32').tolist() == [[1, 2.5], [-3, np.float32(1e-7)]]
assert load('f64').tolist() == [np.pi, 0.0, 1e300] and np.signbit(load('f64')[1])
assert load('i8').dtype == np.int8 and load('i8').tolist() == [-128, 127]
assert load('u8').shape == (1, 3) and load('u8').tolist() == [[0, 128, 255]]
assert load('i32').tolist() == [-2**31, 2**31 - 1]
assert load('i64').dtype == np.int64 and load('i64').tolist() == [-2**63, 2**53 + 1]
assert load('b').dtype == np.bool_ and load('b').tolist() == [True, False, True]
assert load('s').shape == () and load('s') == 7
print("ok")
`);
  assert.equal(out.trim(), 'ok');
});

test('reads format 2.0 and 3.0 files', () => {
  python(`
import numpy as np
from numpy.lib import format as F
for v in [(2, 0), (3, 0)]:
    with open(${JSON.stringify(dir)} + f"/v{v[0]}.npy", "wb") as f:
        F.write_array(f, np.arange(6, dtype=np.float32).reshape(2, 3), version=v)
`);
  for (const v of [2, 3]) {
    const a = readNpy(join(dir, `v${v}.npy`));
    assert.deepEqual(a.shape, [2, 3]);
    assert.deepEqual([...a.data], [0, 1, 2, 3, 4, 5]);
  }
});

test('refuses what it cannot read exactly, saying why', () => {
  python(`
import numpy as np
d = ${JSON.stringify(dir)}
np.save(d + "/big.npy", np.arange(3, dtype=">f4"))
np.save(d + "/fortran.npy", np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)))
np.save(d + "/complex.npy", np.zeros(2, np.complex64))
np.save(d + "/ok.npy", np.zeros(4, np.float32))
`);
  assert.throws(() => readNpy(join(dir, 'big.npy')), /big-endian/);
  assert.throws(() => readNpy(join(dir, 'fortran.npy')), /Fortran-order/);
  assert.throws(() => readNpy(join(dir, 'complex.npy')), /unsupported .npy dtype '<c8'/);
  const ok = readFileSync(join(dir, 'ok.npy'));
  assert.throws(() => parseNpy(ok.subarray(0, ok.length - 2)), /data is 14 bytes, expected 16/);
  assert.throws(() => parseNpy(Buffer.from('not a numpy file')), /bad magic/);
  writeFileSync(join(dir, 'junk.npy'), 'junk');
  assert.throws(() => readNpy(join(dir, 'junk.npy')), /bad magic/);
  assert.throws(() => formatNpy({ dtype: 'float32', shape: [2, 2], data: new Float32Array(3) }), /do not fill shape/);
});

test('reads from an unaligned buffer (a slice of a larger one)', () => {
  const bytes = formatNpy({ dtype: 'float64', shape: [2], data: Float64Array.from([1, 2]) });
  const padded = Buffer.concat([Buffer.from([0, 0, 0]), bytes]);
  assert.deepEqual([...parseNpy(padded.subarray(3)).data], [1, 2]);
});

test('reads fixed-width bytes (string tensors) as NumPy wrote them, and refuses a cut one', () => {
  const path = join(dir, 'bytes.npy');
  python(`import numpy as np\nnp.save(${JSON.stringify(path)}, np.array([[b"\\n\\x05a\\x00b", b"xy"]], dtype=bytes))`);
  const a = readNpy(path);
  assert.equal(a.dtype, 'bytes');
  assert.deepEqual(a.shape, [1, 2]);
  assert.deepEqual(a.data.map((/** @type {Uint8Array} */ e) => Buffer.from(e).toString('latin1')), ['\n\x05a\x00b', 'xy']);
  const cut = readFileSync(path).subarray(0, -3);
  assert.throws(() => parseNpy(cut), /\.npy data is \d+ bytes, expected 10 for S5 of shape \[1, 2\]/);
});
