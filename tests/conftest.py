import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HARNESS = [sys.executable, "-m", "harness.cli"]


@pytest.fixture(scope="session", autouse=True)
def _children_are_not_xdist_workers():
    """Under `pytest -n 2` (make test) each worker process carries PYTEST_XDIST_WORKER; a pytest that a test
    starts would inherit it, and pytest-benchmark then takes itself for an xdist worker and refuses
    --benchmark-only. The pytest runs the tests start are single processes of their own."""
    for key in [k for k in os.environ if k.startswith("PYTEST_XDIST_")]:
        del os.environ[key]


@pytest.fixture(scope="session")
def exporter():
    """Artifacts from the shared content-addressed cache: the key covers fixture source, exporter
    source and converter versions, so a cached artifact is exactly what a fresh export would write."""
    from harness.export import Exporter

    return Exporter()


@pytest.fixture(scope="session")
def pow_artifacts(exporter):
    from harness.fixtures import get_fixture

    fx = get_fixture("pow")
    return {fmt: exporter.get(fx, fmt) for fmt in ("savedmodel", "onnx13", "tflite", "tflite_int8")}


def worker_pool(**kwargs):
    """A worker pool whose workers see the export cache (the artifacts the tests load) and a scratch
    folder of the harness's own under the system's temporary folder."""
    import tempfile

    from harness.export import cache_root
    from harness.runners import WorkerPool
    from harness.runners.table import WorkerContext

    return WorkerPool(WorkerContext(cache_root(), Path(tempfile.gettempdir()) / "harness-scratch"), **kwargs)


def run_cli(*args: str, cwd: Path = REPO, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    # A fixed width: what the CLI prints must not depend on the terminal the tests were started from.
    return subprocess.run(HARNESS + list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "250", **(env or {})})


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs: a disk that fills up (needs root, as on the project's machines and in CI)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)



def results_of(folder: Path) -> list[dict]:
    """A run folder's results.jsonl, one dict a line."""
    import json

    return [json.loads(x) for x in (folder / "results.jsonl").read_text().splitlines() if x.strip()]


def alive(pid: int) -> bool:
    """Whether a process is still running (a zombie is dead for our purpose)."""
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# A custom Keras layer users register and hand to --custom-objects (inspect, check, pytest).
SCALE_LAYER = """
import keras


@keras.saving.register_keras_serializable(package="mine")
class Scale(keras.layers.Layer):
    def __init__(self, factor=2.0, **kw):
        super().__init__(**kw)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}
"""

def check_run_schema(folder: Path) -> int:
    """Validate a run folder's run.json and every line of results.jsonl against the checked-in JSON
    Schemas (harness/schemas); returns the number of results checked."""
    import json

    import jsonschema

    schemas = REPO / "harness" / "schemas"
    run_schema = json.loads((schemas / "run.schema.json").read_text())
    result_schema = json.loads((schemas / "result.schema.json").read_text())
    jsonschema.validate(json.loads((folder / "run.json").read_text()), run_schema)
    lines = [line for line in (folder / "results.jsonl").read_text().splitlines() if line.strip()]
    for line in lines:
        jsonschema.validate(json.loads(line), result_schema)
    return len(lines)


@pytest.fixture(scope="session")
def lstm(tmp_path_factory):
    """A tiny Keras 3 LSTM, converted the way the exporters do it: tf2onnx 1.17 leaves a TensorFlow
    PartitionedCall in its ONNX graph; the TFLite converter, allowed Select TF ops, emits Flex ops."""
    from harness.export.common import import_tf

    tf = import_tf()
    import keras
    import onnx
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    out = tmp_path_factory.mktemp("lstm")
    keras.utils.set_random_seed(0)
    x = keras.Input((5, 3), name="x")
    model = keras.Model(x, keras.layers.Dense(2)(keras.layers.LSTM(4)(x)))
    model.save(str(out / "lstm.keras"))
    model.export(str(out / "saved_model"), verbose=False)
    conv = tf.lite.TFLiteConverter.from_saved_model(str(out / "saved_model"))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    (out / "model.tflite").write_bytes(conv.convert())
    loaded = tf.saved_model.load(str(out / "saved_model"))  # kept: the signature holds only weak references
    fn = loaded.signatures["serving_default"]
    frozen = convert_variables_to_constants_v2(fn)
    _, kwargs = fn.structured_input_signature
    spec = [tf.TensorSpec(kwargs[k].shape, kwargs[k].dtype, name=k) for k in sorted(kwargs)]
    onnx_model, _ = tf2onnx.convert.from_function(tf.function(lambda *a: frozen(*a)), input_signature=spec, opset=13)
    onnx.save(onnx_model, str(out / "model.onnx"))
    return out
