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

The second op, `VideoRopeCache`, rotates q and k exactly as `VideoRope` and writes the rotated k and the v into
caller-owned caches at a per-sequence offset:

    q_rot, k_cache_out, v_cache_out = VideoRopeCache(q, k, v, positions, inv_freq, axis_map, k_cache, v_cache,
                                                     write_offset; interleaved, layout, scale)

q             (B, Hq, S, D) for layout 0 or (B, S, Hq, D) for layout 1
k, v          (B, KV, S, D) or (B, S, KV, D); q, k, v, k_cache, v_cache share one dtype (fp32/fp16/bf16)
positions, inv_freq, axis_map, attributes: as `VideoRope`
k_cache, v_cache  (B, KV, C, D) whatever the layout (C: capacity)
write_offset  (B,) int32
q_rot         VideoRope(q)
k_cache_out   k_cache with row write_offset[b] + s of sequence b set to VideoRope(k)[b, :, s, :] (in cache layout)
v_cache_out   v_cache with the same rows set to v[b, :, s, :]

Every other cache row is left as it was, bit for bit; a row write_offset[b] + s outside [0, C) is not written (an
offset may be negative or run past the end: only the rows that land inside the cache are written). In TensorRT
k_cache_out is k_cache and v_cache_out is v_cache (aliased plugin I/O, the same memory, updated in place); in the
torch op and the ONNX Runtime op they are updated copies.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The op's one name: torch op `videorope::VideoRope`, ONNX op type, TensorRT plugin name, ORT custom op.
OP_NAME = "VideoRope"
#: The rotate-and-write-the-cache op's one name, in the same places.
CACHE_OP_NAME = "VideoRopeCache"
#: ONNX node domain: onnxruntime-extensions registers Python ops only here, and TensorRT reads it too.
ONNX_DOMAIN = "ai.onnx.contrib"
#: the domain of the ops' standard-op ONNX local functions (the decomposed forms)
FUNCTION_DOMAIN = "videorope"
PLUGIN_NAMESPACE = "videorope"
PLUGIN_VERSION = "1"
MAX_AXES = 4

LAYOUT_BHSD = 0
LAYOUT_BSHD = 1


@dataclass(frozen=True)
class RotaryAttrs:
    """The op's attributes. Integers travel as int32 and floats as float32 in ONNX and in TensorRT fields."""

    interleaved: int = 0
    layout: int = LAYOUT_BHSD
    scale: float = 1.0

    def __post_init__(self):
        if self.interleaved not in (0, 1):
            raise ValueError("VideoRope: interleaved must be 0 (rotate-half) or 1 (interleaved pairs), got "
                             f"{self.interleaved!r}")
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
    #: (output index, input index) pairs that share memory in TensorRT (the plugin's getAliasedInput answers).
    aliases: tuple = ()

    def aliased_input(self, output: int) -> int:
        """The input index an output aliases, -1 for none (what the plugin's getAliasedInput returns)."""
        return dict(self.aliases).get(output, -1)


VIDEO_ROPE = _Op()
VIDEO_ROPE_CACHE = _Op(
    name=CACHE_OP_NAME,
    inputs=("q", "k", "v", "positions", "inv_freq", "axis_map", "k_cache", "v_cache", "write_offset"),
    outputs=("q_rot", "k_cache_out", "v_cache_out"),
    aliases=((1, 6), (2, 7)),
)
