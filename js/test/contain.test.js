// Path containment in the Node workers (issue 15): a TF.js weights manifest is the model's own, and
// it may name any path. A crafted model.json whose shard is `../../../secret.bin`, `/etc/passwd`, or a
// link out of the folder is refused at load with one line; the untouched copy loads (the control).

import assert from 'node:assert/strict';
import { cpSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { artifact, scratch, WorkerProcess } from '../test_support/helpers.js';

const dir = scratch();
/** @type {WorkerProcess} */
let worker;
/** @type {string} */
let source;

before(() => {
  source = artifact('mlp', 'tfjs_graph');
  writeFileSync(join(dir, 'secret.bin'), Buffer.alloc(4096, 7));
  worker = new WorkerProcess('node-tfjs-cpu');
});
after(async () => {
  await worker.shutdown();
  rmSync(dir, { recursive: true, force: true });
});

/** A copy of the mlp artifact under dir/<name>/art, its manifest's first shard path changed by `edit`. */
function crafted(/** @type {string} */ name, /** @type {(json: any, tfjs: string) => void} */ edit) {
  const folder = join(dir, name, 'art');
  cpSync(source, folder, { recursive: true });
  const modelJson = join(folder, 'tfjs', 'model.json');
  const json = JSON.parse(readFileSync(modelJson, 'utf8'));
  edit(json, join(folder, 'tfjs'));
  writeFileSync(modelJson, JSON.stringify(json));
  return folder;
}

test('the untouched copy loads: the refusals below are the check, not a broken copy', async () => {
  const folder = crafted('control', () => {});
  const { handle } = await worker.call('load', { artifact: folder, format: 'tfjs_graph' });
  assert.match(handle, /^h\d+$/);
});

for (const [name, shard, shown] of [
  ['dotdot', '../../../secret.bin', /weights path '\.\.\/\.\.\/\.\.\/secret\.bin' resolves to .*\/secret\.bin, outside the artifact folder .*\/dotdot\/art: refused/],
  ['absolute', '/etc/passwd', /weights path '\/etc\/passwd' resolves to \/etc\/passwd, outside the artifact folder .*\/absolute\/art: refused/],
]) {
  test(`a manifest shard ${shard} is refused`, async () => {
    const folder = crafted(String(name), (json) => {
      json.weightsManifest[0].paths[0] = shard;
    });
    await assert.rejects(worker.call('load', { artifact: folder, format: 'tfjs_graph' }), (/** @type {any} */ e) => {
      assert.equal(e.kind, 'load_failed');
      assert.match(e.message, /** @type {RegExp} */ (shown));
      return true;
    });
  });
}

test('a shard that is a link out of the folder is refused', async () => {
  const folder = crafted('link', (json, tfjs) => {
    const shard = join(tfjs, json.weightsManifest[0].paths[0]);
    rmSync(shard);
    symlinkSync(join(dir, 'secret.bin'), shard);
  });
  await assert.rejects(worker.call('load', { artifact: folder, format: 'tfjs_graph' }), (/** @type {any} */ e) => {
    assert.equal(e.kind, 'load_failed');
    assert.match(e.message, /^link '.*group1-shard1of1\.bin' resolves to .*\/secret\.bin, outside the artifact folder .*\/link\/art: refused$/);
    return true;
  });
});

test('an artifact.json path that leaves the folder is refused', async () => {
  const folder = crafted('artpath', () => {});
  const meta = JSON.parse(readFileSync(join(folder, 'artifact.json'), 'utf8'));
  meta.path = '../../control/art/tfjs/model.json';
  writeFileSync(join(folder, 'artifact.json'), JSON.stringify(meta));
  await assert.rejects(worker.call('load', { artifact: folder, format: 'tfjs_graph' }), (/** @type {any} */ e) => {
    assert.equal(e.kind, 'load_failed');
    assert.match(e.message, /^artifact path '\.\.\/\.\.\/control\/art\/tfjs\/model\.json' resolves to .*, outside the artifact folder .*: refused$/);
    return true;
  });
});
