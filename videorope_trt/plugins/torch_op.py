"""`torch.ops.videorope.VideoRope` and `torch.ops.videorope.VideoRopeCache`: the rotary ops as torch custom ops.

The model calls this op, so torch.export sees one opaque node that the exporter translates to the ONNX
`VideoRope` node (plugin form) or to standard ops (native / decomposed forms). Its body is the real eager
implementation, so the PyTorch model computes exactly what the op promises.

`VideoRopeCache` is functional here: it returns updated copies of the caches (torch.export and the ONNX exporter
trace functional ops; the in-place update is TensorRT's, through aliased plugin outputs).
"""

from __future__ import annotations

import torch

from videorope_trt.rope.apply import video_rope_cache_torch, video_rope_torch
from videorope_trt.rope.contract import RotaryAttrs


@torch.library.custom_op("videorope::VideoRope", mutates_args=())
def video_rope(
    x: torch.Tensor,
    positions: torch.Tensor,
    inv_freq: torch.Tensor,
    axis_map: torch.Tensor,
    interleaved: int = 0,
    layout: int = 0,
    scale: float = 1.0,
) -> torch.Tensor:
    return video_rope_torch(x, positions, inv_freq, axis_map, RotaryAttrs(interleaved, layout, scale))


@video_rope.register_fake
def _(x, positions, inv_freq, axis_map, interleaved=0, layout=0, scale=1.0):
    return torch.empty_like(x)


def _setup_context(ctx, inputs, output):
    _, positions, inv_freq, axis_map, interleaved, layout, scale = inputs
    ctx.save_for_backward(positions, inv_freq, axis_map)
    ctx.attrs = (interleaved, layout, scale)


def _backward(ctx, grad):
    # The rotation is orthogonal (times `scale`): its adjoint is the rotation by minus the angle.
    positions, inv_freq, axis_map = ctx.saved_tensors
    interleaved, layout, scale = ctx.attrs
    g = video_rope_torch(grad, -positions, inv_freq, axis_map, RotaryAttrs(interleaved, layout, scale))
    return g, None, None, None, None, None, None


video_rope.register_autograd(_backward, setup_context=_setup_context)


def apply(x, positions, inv_freq, axis_map, attrs: RotaryAttrs = RotaryAttrs()):
    """Call the op with a `RotaryAttrs`."""
    return video_rope(x, positions, inv_freq, axis_map, attrs.interleaved, attrs.layout, attrs.scale)


@torch.library.custom_op("videorope::VideoRopeCache", mutates_args=())
def video_rope_cache(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    positions: torch.Tensor,
    inv_freq: torch.Tensor,
    axis_map: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    write_offset: torch.Tensor,
    interleaved: int = 0,
    layout: int = 0,
    scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return video_rope_cache_torch(q, k, v, positions, inv_freq, axis_map, k_cache, v_cache, write_offset,
                                  RotaryAttrs(interleaved, layout, scale))


@video_rope_cache.register_fake
def _(q, k, v, positions, inv_freq, axis_map, k_cache, v_cache, write_offset, interleaved=0, layout=0, scale=1.0):
    return torch.empty_like(q), torch.empty_like(k_cache), torch.empty_like(v_cache)


def apply_cache(q, k, v, positions, inv_freq, axis_map, k_cache, v_cache, write_offset,
                attrs: RotaryAttrs = RotaryAttrs()):
    """Call `VideoRopeCache` with a `RotaryAttrs`: (q_rot, k_cache_out, v_cache_out)."""
    return video_rope_cache(q, k, v, positions, inv_freq, axis_map, k_cache, v_cache, write_offset,
                            attrs.interleaved, attrs.layout, attrs.scale)
