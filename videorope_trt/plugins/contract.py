"""The `VideoRope` op contract, as data shared by the torch op, the ONNX exporter, the ONNX Runtime op,
the TensorRT plugin (its creator declares the same fields) and the tests.

    y = VideoRope(x, positions, inv_freq, axis_map; interleaved, layout, scale)

x          query or key heads, fp32/fp16/bf16, (B, H, S, D) for layout 0 or (B, S, H, D) for layout 1
positions  (A, B, S) float32, A <= 4: one row per position axis (t, h, w for Qwen-style variants)
inv_freq   (F,) float32, F = rotary_dim / 2 <= D / 2: the rotary frequencies, already scaled
axis_map   (F,) int32: which row of `positions` frequency k reads
y          same shape and dtype as x

angle[b, s, k] = positions[axis_map[k], b, s] * inv_freq[k], computed in fp32; cos and sin are multiplied by
`scale` (an attention temperature such as YaRN's mscale; 1.0 for none). Frequency k rotates the dimension pair
(k, k + F) in the rotate-half layout (interleaved = 0) or (2k, 2k + 1) in the interleaved layout; dimensions at
and beyond 2F pass through unchanged (partial rotary).
"""

from __future__ import annotations

from dataclasses import dataclass

#: The op's one name: torch op `videorope::VideoRope`, ONNX op type, TensorRT plugin name, ORT custom op.
OP_NAME = "VideoRope"
#: ONNX node domain: onnxruntime-extensions registers Python ops only here, and TensorRT reads it too.
ONNX_DOMAIN = "ai.onnx.contrib"
PLUGIN_NAMESPACE = "videorope"
PLUGIN_VERSION = "1"
MAX_AXES = 4

LAYOUT_BHSD = 0
LAYOUT_BSHD = 1
LAYOUTS = {"bhsd": LAYOUT_BHSD, "bshd": LAYOUT_BSHD}


@dataclass(frozen=True)
class RotaryAttrs:
    """The op's attributes. Integers travel as int32 and floats as float32 in ONNX and in TensorRT fields."""

    interleaved: int = 0
    layout: int = LAYOUT_BHSD
    scale: float = 1.0

    def __post_init__(self):
        if self.interleaved not in (0, 1):
            raise ValueError(f"VideoRope: interleaved must be 0 (rotate-half) or 1 (interleaved pairs), got {self.interleaved!r}")
        if self.layout not in (LAYOUT_BHSD, LAYOUT_BSHD):
            raise ValueError(f"VideoRope: layout must be 0 (B,H,S,D) or 1 (B,S,H,D), got {self.layout!r}")
        if not (self.scale > 0 and self.scale < float("inf")):
            raise ValueError(f"VideoRope: scale must be a finite positive number, got {self.scale!r}")

    def onnx_attributes(self) -> dict:
        """Node attributes, including the two TensorRT's ONNX parser uses to find the plugin."""
        return {
            "interleaved": int(self.interleaved),
            "layout": int(self.layout),
            "scale": float(self.scale),
            "plugin_namespace": PLUGIN_NAMESPACE,
            "plugin_version": PLUGIN_VERSION,
        }


@dataclass(frozen=True)
class _Op:
    name: str = OP_NAME
    domain: str = ONNX_DOMAIN
    namespace: str = PLUGIN_NAMESPACE
    version: str = PLUGIN_VERSION
    inputs: tuple = ("x", "positions", "inv_freq", "axis_map")
    outputs: tuple = ("y",)
    #: Fields the TensorRT creator declares, with their PluginFieldType names.
    fields: tuple = (("interleaved", "INT32"), ("layout", "INT32"), ("scale", "FLOAT32"))


VIDEO_ROPE = _Op()
