"""FP16 graphs for strongly typed engines (TensorRT 11 / TensorRT-RTX decide precision from the ONNX types).

Converter: onnxconverter-common's `convert_float_to_float16`, a maintained converter that installs cleanly beside
onnxruntime (ModelOpt AutoCast's ONNX extra replaces the CPU onnxruntime with onnxruntime-gpu, see trt_facts §14).
It runs before the rotary form switch, while the rotation is still one opaque `VideoRope` node, so blocking that
node keeps the whole rotation (angle included) in fp32 whatever form it becomes.

Kept in fp32 (the converter inserts the Casts): norm statistics (RMSNormalization / LayerNormalization, and the
decomposed forms' ReduceMean/Pow), softmax, and the rotation. Graph inputs and outputs stay fp32 (keep_io_types),
so feeds are the same for every precision. Constants are clamped to ±65504, which keeps the causal mask's
finfo(float32).min finite in fp16 (an -inf would turn a fully padded row into NaN).
"""

from __future__ import annotations

import warnings

import onnx

from videorope_trt.plugins.contract import OP_NAME

FP32_OPS = ("RMSNormalization", "LayerNormalization", "SimplifiedLayerNormalization", "ReduceMean", "Pow",
            "Softmax", OP_NAME)
FP16_MAX = 65504.0


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """FP16 copy of an fp32 graph; see the module docstring for what stays fp32."""
    try:
        from onnxconverter_common import float16
    except ImportError:
        raise ImportError("fp16 export needs onnxconverter-common (pinned in requirements/lock.txt): "
                          "pip install onnxconverter-common==1.16.0") from None
    from onnxconverter_common.float16 import DEFAULT_OP_BLOCK_LIST

    model = _isolate_outputs(model)
    with warnings.catch_warnings():  # it warns once per clamped constant; clamping is intended (docstring)
        warnings.simplefilter("ignore", UserWarning)
        out = float16.convert_float_to_float16(
            model, keep_io_types=True, max_finite_val=FP16_MAX,
            op_block_list=list(DEFAULT_OP_BLOCK_LIST) + list(FP32_OPS), disable_shape_infer=False)
    # The converter leaves some intermediate value_info entries typed float; they are hints only, so drop them
    # rather than let a stale type fail the session.
    del out.graph.value_info[:]
    return out


def _isolate_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Copy in which every graph output is produced by its own Identity node.

    The converter keeps graph outputs fp32 by typing the output tensor itself; when that tensor also feeds other
    nodes (a present K/V feeds the attention), those nodes would see fp32 beside fp16. An Identity separates them.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    internal = {o.name: o.name + "__internal" for o in out.graph.output}
    for node in out.graph.node:
        node.input[:] = [internal.get(i, i) for i in node.input]
        node.output[:] = [internal.get(o, o) for o in node.output]
    for name, inner in internal.items():
        out.graph.node.append(onnx.helper.make_node("Identity", [inner], [name], name=f"{name}/output"))
    return out


PRECISIONS = {"fp32": lambda model: model, "fp16": to_fp16}


def convert(model: onnx.ModelProto, precision: str) -> onnx.ModelProto:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {sorted(PRECISIONS)} "
                         f"(int8/fp8 come from the calibrate command)")
    return PRECISIONS[precision](model)
