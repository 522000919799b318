// Helpers the runtimes share: where this package lives, versions of what it loaded.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ProtocolError } from '../protocol.js';

/** The js/ folder (the npm package root). */
export const JS_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** @param {string} name */
export function packageDir(name) {
  return join(JS_ROOT, 'node_modules', name);
}

/**
 * The installed version of an npm package, from its package.json (many packages' `exports` hide
 * that file from `import`).
 * @param {string} name
 */
export function packageVersion(name) {
  try {
    return JSON.parse(readFileSync(join(packageDir(name), 'package.json'), 'utf8')).version;
  } catch {
    return 'unknown';
  }
}

/**
 * A CommonJS package imported from ESM arrives as `default`; an ES module as its namespace.
 * @param {any} mod @param {string} probe  a name the real module object has
 */
export function unwrap(mod, probe) {
  return probe in mod ? mod : mod.default;
}

/**
 * Refuse an artifact whose tensors have a dtype the runtime cannot hold, rather than let the
 * library cast it silently and hand back wrong numbers.
 * @param {import('../protocol.js').Artifact} artifact
 * @param {readonly string[]} dtypes  the dtypes the runtime computes in
 * @param {string} library  for the message
 */
export function requireDtypes(artifact, dtypes, library) {
  for (const [kind, specs] of /** @type {const} */ ([['input', artifact.inputs], ['output', artifact.outputs]])) {
    for (const spec of specs) {
      if (!dtypes.includes(spec.dtype)) {
        throw new ProtocolError(
          'unsupported',
          `${library} has no ${spec.dtype} tensors: ${kind} '${spec.name}' is ${spec.dtype} (it computes in ${dtypes.join(', ')} only)`,
        );
      }
    }
  }
}
