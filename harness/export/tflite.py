"""TFLite: float32, float16 weights, dynamic-range and full-integer int8 (int8 in, int8 out), and
float32 with Select TF ops allowed (tflite_select)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.artifact import Artifact, IOSpec
from harness.export.common import import_tf, tag_set
from harness.fixtures import Fixture

# Calibration: 32 draws of 8 rows, so the observed ranges cover the generator's distribution (64 single
# rows left pow's output range short and clipped it at batch 16).
REPRESENTATIVE_DRAWS = 32
REPRESENTATIVE_BATCH = 8


def export(fixture: Fixture, spec, out: Path, source: Artifact | None, art: Artifact) -> None:
    tf = import_tf()
    assert source is not None
    conv = tf.lite.TFLiteConverter.from_saved_model(str(source.model_path), signature_keys=[source.signature],
                                                    tags=set(tag_set(source.extra.get("tag", "serve"))))
    if spec.name == "tflite_fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif spec.name == "tflite_dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif spec.name == "tflite_select":
        # Select TF ops: what TFLite has no builtin for (TensorList ops of a recurrent layer's while
        # loop) is kept as a TensorFlow op, run by the Flex delegate where the interpreter links it.
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
        conv._experimental_lower_tensor_list_ops = False
    elif spec.name == "tflite_int8":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8

        def representative():
            # Calibration data from the fixture's own generator, never from its test inputs' seed.
            for i in range(REPRESENTATIVE_DRAWS):
                yield fixture.make_inputs(REPRESENTATIVE_BATCH, seed=1000 + i)

        conv.representative_dataset = representative
    import warnings

    with warnings.catch_warnings():
        # The calibrator uses tf.lite.Interpreter internally and warns that it is deprecated.
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        (out / spec.layout).write_bytes(conv.convert())
    art.path = spec.layout
    art.inputs, art.outputs = _signature_io(out / spec.layout, source)


def _signature_io(path: Path, source: Artifact) -> tuple[list[IOSpec], list[IOSpec]]:
    """Reads (does not run) the flatbuffer's signature: dtypes and quantisation per tensor."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner(source.signature)
    shapes = {s.name: s.shape for s in source.inputs + source.outputs}

    def specs(details: dict) -> list[IOSpec]:
        out = []
        for name in sorted(details):
            d = details[name]
            scales, zeros = d["quantization_parameters"]["scales"], d["quantization_parameters"]["zero_points"]
            quantised = np.dtype(d["dtype"]).kind in "iu" and len(scales) == 1
            out.append(
                IOSpec(
                    name=name,
                    stored_name=name,  # the signature runner addresses tensors by signature name
                    dtype=np.dtype(d["dtype"]).name,
                    shape=shapes.get(name, [int(x) for x in d["shape_signature"]]),
                    scale=float(scales[0]) if quantised else None,
                    zero_point=int(zeros[0]) if quantised else None,
                )
            )
        return out

    return specs(runner.get_input_details()), specs(runner.get_output_details())
