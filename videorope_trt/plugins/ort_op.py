"""`VideoRope` and `VideoRopeCache` as ONNX Runtime ops: onnxruntime-extensions Python ops that call the numpy
references.

It is a parity oracle, not a fast path: one Python call per node under the GIL, on the CPU. onnxruntime-extensions
registers Python ops only in domain `ai.onnx.contrib`, which is why the ONNX node lives there (TensorRT reads the same
node through its `plugin_namespace` / `plugin_version` attributes, which this op ignores). `VideoRopeCache` returns
the updated caches as new arrays (ONNX Runtime has no aliased outputs). Both take float32 only: onnxruntime-extensions'
Python ops have no float16 (an op declared with float16 inputs aborts the process when it runs).

    sess = onnxruntime.InferenceSession(path, session_options(), providers=["CPUExecutionProvider"])
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from videorope_trt.rope.apply import video_rope_cache_numpy, video_rope_numpy
from videorope_trt.rope.contract import CACHE_OP_NAME, ONNX_DOMAIN, OP_NAME, RotaryAttrs


def _attrs(attrs: dict) -> RotaryAttrs:
    return RotaryAttrs(int(attrs.get("interleaved", 0)), int(attrs.get("layout", 0)), float(attrs.get("scale", 1.0)))


def _compute(x, positions, inv_freq, axis_map, **attrs):
    return video_rope_numpy(np.asarray(x), positions, inv_freq, axis_map, _attrs(attrs))


def _compute_cache(q, k, v, positions, inv_freq, axis_map, k_cache, v_cache, write_offset, **attrs):
    return video_rope_cache_numpy(q, k, v, positions, inv_freq, axis_map, k_cache, v_cache, write_offset,
                                  _attrs(attrs))


@functools.cache  # registration is process-wide in onnxruntime-extensions: do it once
def register() -> None:
    """Register both ops with onnxruntime-extensions."""
    from onnxruntime_extensions import PyCustomOpDef, onnx_op

    f32, i32 = PyCustomOpDef.dt_float, PyCustomOpDef.dt_int32
    attrs = {"interleaved": PyCustomOpDef.dt_int64, "layout": PyCustomOpDef.dt_int64, "scale": PyCustomOpDef.dt_float}
    onnx_op(op_type=OP_NAME, inputs=[f32, f32, f32, i32], outputs=[f32], attrs=attrs)(_compute)
    onnx_op(op_type=CACHE_OP_NAME, inputs=[f32, f32, f32, f32, f32, i32, f32, f32, i32], outputs=[f32, f32, f32],
            attrs=attrs)(_compute_cache)


def session_options(options=None):
    """`onnxruntime.SessionOptions` able to run graphs holding `VideoRope` and `VideoRopeCache` nodes."""
    import onnxruntime as ort
    from onnxruntime_extensions import get_library_path

    register()
    options = options or ort.SessionOptions()
    options.register_custom_ops_library(get_library_path())
    return options


def _plugin_ops(model) -> list:
    return sorted({n.op_type for n in model.graph.node if n.domain == ONNX_DOMAIN} & {OP_NAME, CACHE_OP_NAME})


def inference_session(path, providers=("CPUExecutionProvider",), options=None):
    """An ONNX Runtime session over the graph at `path`, its rotary ops' plugin nodes runnable. These ops are float32
    only here; in an fp16 graph the `VideoRopeCache` nodes run as the op's standard-op definition instead (its
    decomposed form, `cache_forms.py`: the same contract), rewritten in memory, the weights read from beside the
    graph. ValueError for an fp16 graph with `VideoRope` nodes, which have no such rewrite."""
    import onnx
    import onnxruntime as ort

    from videorope_trt.plugins.cache_forms import switch_cache_form

    options = session_options(options)
    model = onnx.load(str(path), load_external_data=False)
    half = any(i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16 for i in model.graph.input)
    if not (half and _plugin_ops(model)):
        return ort.InferenceSession(str(path), options, providers=list(providers))
    switch_cache_form(model, "decomposed")
    if _plugin_ops(model):
        raise ValueError(f"{path} is an fp16 graph with {', '.join(_plugin_ops(model))} plugin nodes, which ONNX "
                         "Runtime runs in float32 only; export it with --rotary-form decomposed or --precision fp32")
    options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(Path(path).parent))
    return ort.InferenceSession(model.SerializeToString(), options, providers=list(providers))
