// The part of Node's Buffer that npy.js's parseNpy uses (from, subarray, equals, readUInt16LE,
// readUInt32LE, toString, buffer/byteOffset), so the page parses .npy files with the same code
// the Node worker does. Installed as globalThis.Buffer before npy.js is evaluated (page.js
// imports this module first). Little-endian reads, as the .npy header lengths are.

class PageBuffer extends Uint8Array {
  /** @param {ArrayBuffer|ArrayLike<number>} source @param {number} [offset] @param {number} [length] */
  static from(source, offset, length) {
    if (source instanceof ArrayBuffer || (typeof SharedArrayBuffer !== 'undefined' && source instanceof SharedArrayBuffer)) {
      return new PageBuffer(source, offset ?? 0, length ?? source.byteLength - (offset ?? 0));
    }
    const out = new PageBuffer(source.length);
    out.set(source);
    return out;
  }

  /** @param {Uint8Array} other */
  equals(other) {
    if (this.length !== other.length) return false;
    for (let i = 0; i < this.length; i++) if (this[i] !== other[i]) return false;
    return true;
  }

  /** @param {number} offset */
  readUInt16LE(offset) {
    if (offset + 2 > this.length) throw new RangeError(`offset ${offset} is out of range`);
    return this[offset] | (this[offset + 1] << 8);
  }

  /** @param {number} offset */
  readUInt32LE(offset) {
    if (offset + 4 > this.length) throw new RangeError(`offset ${offset} is out of range`);
    return (this[offset] | (this[offset + 1] << 8) | (this[offset + 2] << 16)) + this[offset + 3] * 2 ** 24;
  }

  /** @param {string} [encoding] latin1 or utf8 */
  toString(encoding = 'utf8') {
    if (encoding === 'latin1' || encoding === 'binary') return String.fromCharCode(...this);
    return new TextDecoder(encoding === 'utf-8' ? 'utf-8' : encoding).decode(this);
  }
}

globalThis.Buffer ??= /** @type {any} */ (PageBuffer);
export default PageBuffer;
