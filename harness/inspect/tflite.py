"""TFLite flatbuffers: ai_edge_litert's schema for the tensors and quantisation, LiteRT's interpreter for
whether it loads."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from harness.errors import HarnessError
from harness.inspect.common import FLEX_NOTE, corrupt, counted, first_line, problem, tensor


def read_tflite(path: Path, info: dict, signature: str | None, tag: str | None) -> None:
    from ai_edge_litert import schema_py_generated as schema

    from harness.export.validate import FLEX_PREFIX, ConverterFault, check_tflite

    expected = "a TFLite flatbuffer"
    buf = path.read_bytes()
    if len(buf) < 8 or not schema.Model.ModelBufferHasIdentifier(buf, 0):
        raise corrupt("TFLite model", path, "is not a TFLite flatbuffer (no TFL3 identifier)", expected)
    types = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    builtins = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    try:
        model = schema.Model.GetRootAsModel(buf, 0)
        codes = []
        for i in range(model.OperatorCodesLength()):
            oc = model.OperatorCodes(i)
            code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
            custom = oc.CustomCode()
            codes.append(custom.decode("utf-8", "replace") if custom else builtins.get(code, f"BUILTIN_{code}"))
        ops: Counter = Counter()
        produced: list[set[int]] = []
        for s in range(model.SubgraphsLength()):
            sg = model.Subgraphs(s)
            made = {int(t) for t in sg.InputsAsNumpy()} if sg.InputsLength() else set()
            for o in range(sg.OperatorsLength()):
                op = sg.Operators(o)
                ops[codes[op.OpcodeIndex()]] += 1
                if op.OutputsLength():
                    made.update(int(t) for t in op.OutputsAsNumpy())
            produced.append(made)

        def tensor_at(sg, index: int, name: str | None = None) -> dict:
            t = sg.Tensors(index)
            shape = t.ShapeSignatureAsNumpy() if t.ShapeSignatureLength() else t.ShapeAsNumpy()
            dims = [None if int(d) < 0 else int(d) for d in shape] if not isinstance(shape, int) else []
            q = t.Quantization()
            scale = zero = None
            if q is not None and q.ScaleLength():
                scales, zeros = q.ScaleAsNumpy(), q.ZeroPointAsNumpy() if q.ZeroPointLength() else [0]
                scale = float(scales[0]) if len(scales) == 1 else [float(v) for v in scales]
                zero = int(zeros[0]) if len(zeros) == 1 else [int(v) for v in zeros]
            return tensor(name or t.Name().decode("utf-8", "replace"), types.get(t.Type(), f"type {t.Type()}"), dims,
                           stored_name=t.Name().decode("utf-8", "replace"), scale=scale, zero_point=zero)

        for i in range(model.SignatureDefsLength()):
            sd = model.SignatureDefs(i)
            key = sd.SignatureKey().decode("utf-8", "replace")
            if signature is not None and key != signature:
                continue
            sg = model.Subgraphs(sd.SubgraphIndex())
            ins = sorted((sd.Inputs(j) for j in range(sd.InputsLength())), key=lambda m: m.Name())
            outs = sorted((sd.Outputs(j) for j in range(sd.OutputsLength())), key=lambda m: m.Name())
            info["signatures"].append({"key": key, "subgraph": sd.SubgraphIndex(),
                                       "inputs": [tensor_at(sg, m.TensorIndex(), m.Name().decode()) for m in ins],
                                       "outputs": [tensor_at(sg, m.TensorIndex(), m.Name().decode()) for m in outs]})
        keys = [model.SignatureDefs(i).SignatureKey().decode("utf-8", "replace") for i in range(model.SignatureDefsLength())]
        if signature is not None and not info["signatures"]:
            raise HarnessError(f"TFLite model {path} has no signature {signature!r}: expected one of {keys}")
        if not keys and model.SubgraphsLength():
            sg = model.Subgraphs(0)
            info["signatures"].append({"key": None, "subgraph": 0,
                                       "inputs": [tensor_at(sg, int(t)) for t in (sg.InputsAsNumpy() if sg.InputsLength() else [])],
                                       "outputs": [tensor_at(sg, int(t)) for t in (sg.OutputsAsNumpy() if sg.OutputsLength() else [])]})
            problem(info, "no signature: the harness's litert worker runs a signature runner", ["litert"])
        quant = _tflite_quantization(model, produced, types, info["signatures"])
    except HarnessError:
        raise
    except Exception as e:  # a flatbuffer cut short or overwritten reads out of bounds
        raise corrupt("TFLite model", path, f"does not parse ({first_line(e)})", expected) from None
    info["ops"] = counted(ops)
    info["subgraphs"] = model.SubgraphsLength()
    info["quantization"] = quant
    info["format"] = {"int8": "tflite_int8", "int16x8": "tflite_int8", "float16": "tflite_fp16", "dynamic-range": "tflite_dynamic"}.get(quant["scheme"] or "", "tflite")
    try:
        check_tflite(path, info["format"])  # LiteRT's own verifier and allocation: nothing runs
        info["litert_loads"] = True
    except ConverterFault as e:
        info["litert_loads"] = False
        flex = [op for op in ops if op.startswith(FLEX_PREFIX)]
        if e.culprit == "environment" or flex:
            problem(info, f"Select TF ops {', '.join(flex) or e.op or '(unnamed)'}: {FLEX_NOTE}", ["litert"])
        else:
            problem(info, e.summary, ["litert"])
    custom = [op for op in ops if not op.startswith(FLEX_PREFIX) and op not in builtins.values()]
    if custom and info["litert_loads"] is False:
        problem(info, f"custom ops {', '.join(custom)}: LiteRT must have them registered", ["litert"])


def _tflite_quantization(model, produced: list[set[int]], types: dict[int, str], signatures: list[dict]) -> dict:
    """How the model is quantised, from tensor types: int8 activations (full integer), float16 or int8
    constants with float activations (float16 weights, dynamic range)."""
    activations: Counter = Counter()
    constants: Counter = Counter()
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)
        for i in range(sg.TensorsLength()):
            t = sg.Tensors(i)
            dtype = types.get(t.Type(), "?")
            quantised = t.Quantization() is not None and t.Quantization().ScaleLength() > 0
            if i in produced[s] or t.IsVariable():
                activations[(dtype, quantised)] += 1
            else:
                constants[(dtype, quantised)] += 1
    io = {t["dtype"] for sig in signatures for t in sig["inputs"] + sig["outputs"]}
    if io and io <= {"int8", "uint8"}:
        io_words = f"{'/'.join(sorted(io))} in/out"
    elif io & {"int8", "uint8", "int16"}:
        io_words = "mixed integer and float in/out"
    else:
        io_words = "float in/out"
    if activations[("int16", True)]:
        scheme, words = "int16x8", f"full integer, int16 activations, int8 weights, {io_words}"
    elif activations[("int8", True)] or activations[("uint8", True)]:
        scheme, words = "int8", f"full integer int8, {io_words}"
    elif constants[("float16", False)] or constants[("float16", True)]:
        scheme, words = "float16", f"float16 weights, {io_words}"
    elif constants[("int8", True)] or constants[("uint8", True)]:
        scheme, words = "dynamic-range", f"dynamic-range: int8 weights, float activations, {io_words}"
    else:
        scheme, words = None, f"not quantised, {io_words}"
    return {"scheme": scheme, "io": io_words, "description": words}
