// Path containment for the Node workers: nothing an artifact names may resolve outside its folder.
// An artifact is data from outside the worker: its artifact.json path, a symbolic link in its folder
// or a TF.js weights manifest entry could each point at /etc/passwd. The worker refuses it before the
// runtime reads it, with one line naming the path, where it leads and the folder it left.

import { lstatSync, readdirSync, realpathSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve, sep } from 'node:path';
import { ProtocolError } from '../protocol.js';

/** @param {string} root @param {string} path */
function inside(root, path) {
  return path === root || path.startsWith(root.endsWith(sep) ? root : root + sep);
}

/** Like realpath, for a path that may not exist: the deepest existing part resolved, the rest appended. */
function resolveReal(/** @type {string} */ path) {
  try {
    return realpathSync(path);
  } catch {
    const parent = dirname(path);
    return parent === path ? path : join(resolveReal(parent), path.slice(parent.length + 1));
  }
}

/** @param {string} what @param {string} path @param {string} real @param {string} root */
export function refuse(what, path, real, root) {
  return new ProtocolError('load_failed', `${what} '${path}' resolves to ${real}, outside the artifact folder ${root}: refused`);
}

/**
 * The artifact folder (resolved), after checking the model's path and every link below the folder.
 * @param {{path?: string}} artifact @param {string} modelPath
 */
export function checkArtifact(artifact, modelPath) {
  const rel = artifact.path ?? '.';
  const parts = rel.split('/').filter((p) => p !== '' && p !== '.');
  let folder = modelPath;
  for (let i = 0; i < parts.length; i++) folder = dirname(folder);
  const root = resolveReal(folder);
  const real = resolveReal(modelPath);
  if (isAbsolute(rel) || parts.includes('..') || !inside(root, real)) throw refuse('artifact path', rel, real, root);
  const walk = (/** @type {string} */ dir) => {
    for (const name of readdirSync(dir)) {
      const p = join(dir, name);
      const st = lstatSync(p);
      if (st.isSymbolicLink()) {
        const target = resolveReal(p);
        if (!inside(root, target)) throw refuse('link', p, target, root);
      } else if (st.isDirectory()) {
        walk(p);
      }
    }
  };
  walk(root);
  return root;
}

/**
 * `base/name` resolved, when it stays in `root`; refused otherwise (absolute names too).
 * @param {string} root @param {string} base @param {string} name @param {string} what
 */
export function checkInside(root, base, name, what) {
  const real = resolveReal(resolve(base, name));
  if (isAbsolute(name) || !inside(root, real)) throw refuse(what, name, real, root);
  return real;
}
