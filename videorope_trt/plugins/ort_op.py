"""`VideoRope` as an ONNX Runtime op: an onnxruntime-extensions Python op that calls the numpy reference.

It is a parity oracle, not a fast path: one Python call per node under the GIL, on the CPU. onnxruntime-extensions
registers Python ops only in domain `ai.onnx.contrib`, which is why the ONNX node lives there (TensorRT reads the same
node through its `plugin_namespace` / `plugin_version` attributes, which this op ignores).

    sess = onnxruntime.InferenceSession(path, session_options(), providers=["CPUExecutionProvider"])
"""

from __future__ import annotations

import functools

import numpy as np

from videorope_trt.plugins.contract import OP_NAME, RotaryAttrs
from videorope_trt.rope.apply import video_rope_numpy

def _compute(x, positions, inv_freq, axis_map, **attrs):
    rot = RotaryAttrs(int(attrs.get("interleaved", 0)), int(attrs.get("layout", 0)), float(attrs.get("scale", 1.0)))
    return video_rope_numpy(np.asarray(x), positions, inv_freq, axis_map, rot)


@functools.cache  # registration is process-wide in onnxruntime-extensions: do it once
def register() -> None:
    """Register the op with onnxruntime-extensions."""
    from onnxruntime_extensions import PyCustomOpDef, onnx_op

    onnx_op(
        op_type=OP_NAME,
        inputs=[PyCustomOpDef.dt_float, PyCustomOpDef.dt_float, PyCustomOpDef.dt_float, PyCustomOpDef.dt_int32],
        outputs=[PyCustomOpDef.dt_float],
        attrs={"interleaved": PyCustomOpDef.dt_int64, "layout": PyCustomOpDef.dt_int64, "scale": PyCustomOpDef.dt_float},
    )(_compute)


def session_options(options=None):
    """`onnxruntime.SessionOptions` able to run graphs holding `VideoRope` nodes."""
    import onnxruntime as ort
    from onnxruntime_extensions import get_library_path

    register()
    options = options or ort.SessionOptions()
    options.register_custom_ops_library(get_library_path())
    return options
