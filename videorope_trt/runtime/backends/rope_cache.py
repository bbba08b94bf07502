"""The decode step's rotation and cache write as one kernel: the fused q/k/v projection's output in, the rotated
query out, the rotated key and the value written into the static cache's row for this token.

Unfused, this is the rotary kernel and two `index_copy_` launches per layer (84 of a 2B decode step's kernels).
One program per head: a query head is rotated into the output, a KV head's key is rotated into
`keys[0, j, position]` and its value copied to `values[0, j, position]`. The rotation is the `VideoRope` contract
(`rope/apply.py`): angle = position[axis_map[f]] × inv_freq[f] in fp32, rotate-half or interleaved pairs, the
channels past 2F unrotated, times `scale`; computed in fp32 and rounded once. Its sine and cosine are accurate
at any angle, as the CUDA kernel's (`plugins/csrc/videorope_kernel.cu`): the fp32 angle is reduced to [-1, 1]
half-turns in fp64 and handed to sinpi/cospi, so the result does not hang on how a compiler lowers sin/cos of
angles that reach 10⁵ at long contexts. Batch 1 (the decode step's GEMVs take one row).
`rotate_into_cache_reference` is the same in torch, for the CPU and as the kernel's oracle.
"""

from __future__ import annotations

import functools

from dataclasses import replace

import torch

from videorope_trt.plugins.contract import LAYOUT_BHSD
from videorope_trt.rope.apply import video_rope_torch
from videorope_trt.runtime.backends.gemv import launch


@functools.cache
def _kernel():
    import triton
    import triton.language as tl
    from triton.language.extra import libdevice

    @triton.jit
    def rope_cache_kernel(qkv_ptr, pos_ptr, freq_ptr, map_ptr, cpos_ptr, q_ptr, k_ptr, v_ptr, rows, scale, HQ, KV,
                          F: tl.constexpr, D: tl.constexpr, INTERLEAVED: tl.constexpr, PDL: tl.constexpr):
        h = tl.program_id(0)
        d = tl.arange(0, D)
        if INTERLEAVED:
            partner, f, first = d ^ 1, d // 2, d % 2 == 0
        else:
            partner, f, first = tl.where(d < F, d + F, d - F), tl.where(d < F, d, d - F), d < F
        rotated = d < 2 * F
        partner, f = tl.where(rotated, partner, d), tl.where(rotated, f, 0)
        inv_freq, axis = tl.load(freq_ptr + f), tl.load(map_ptr + f)
        if PDL:
            tl.extra.cuda.gdc_wait()  # positions, q/k/v and the cache position come from earlier kernels
            tl.extra.cuda.gdc_launch_dependents()
        half_turns = (tl.load(pos_ptr + axis) * inv_freq).to(tl.float64) * 0.3183098861837907  # the fp32 angle / pi
        turns = (half_turns - 2.0 * libdevice.rint(half_turns * 0.5)).to(tl.float32)  # in [-1, 1]
        cos, sin = libdevice.cospi(turns), libdevice.sinpi(turns)
        x = tl.load(qkv_ptr + h * D + d).to(tl.float32)
        xp = tl.load(qkv_ptr + h * D + partner).to(tl.float32)
        y = tl.where(rotated, (x * cos + tl.where(first, -xp, xp) * sin) * scale, x)
        if h < HQ:
            tl.store(q_ptr + h * D + d, y.to(q_ptr.dtype.element_ty))
        else:
            j = h - HQ
            row = (j * rows + tl.load(cpos_ptr)).to(tl.int64) * D
            tl.store(k_ptr + row + d, y.to(k_ptr.dtype.element_ty))
            tl.store(v_ptr + row + d, tl.load(qkv_ptr + (HQ + KV + j) * D + d))

    return rope_cache_kernel


def _check(qkv, positions, inv_freq, keys, values, cache_position, q_heads):
    """Shapes and layouts the kernel indexes by hand; returns (KV heads, cache rows, head dim)."""
    kv, rows, d = keys.shape[1], keys.shape[2], keys.shape[3]
    if keys.shape[0] != 1 or qkv.numel() != (q_heads + 2 * kv) * d or positions.numel() != positions.shape[0]:
        raise ValueError(f"rope_cache: expected one token (batch 1): q/k/v of {q_heads} + 2 x {kv} heads of {d}, "
                         f"positions (A, 1, 1) and a (1, {kv}, rows, {d}) cache; got q/k/v {tuple(qkv.shape)}, "
                         f"positions {tuple(positions.shape)}, cache {tuple(keys.shape)}")
    if not 0 < 2 * inv_freq.shape[0] <= d:
        raise ValueError(f"rope_cache: expected 1..{d // 2} frequencies for head dim {d}, got {inv_freq.shape[0]}")
    if values.shape != keys.shape or not (keys.is_contiguous() and values.is_contiguous()):
        raise ValueError(f"rope_cache: expected contiguous key and value caches of one shape; got keys "
                         f"{tuple(keys.shape)}, values {tuple(values.shape)}")
    if cache_position.numel() != 1 or cache_position.dtype != torch.int64 or cache_position.device != keys.device:
        raise ValueError(f"rope_cache: expected the cache position as one int64 on {keys.device}; got "
                         f"{tuple(cache_position.shape)} {cache_position.dtype} on {cache_position.device}")
    return kv, rows, d


def rotate_into_cache(qkv, positions, inv_freq, axis_map, attrs, keys, values, cache_position, q_heads: int,
                      pdl: bool = False):
    """qkv (1, 1, (Hq + 2 KV) * D), positions (A, 1, 1) fp32, cache_position (1,) int64 on the device →
    the rotated query (1, Hq, 1, D); keys/values (1, KV, rows, D) get this token's row."""
    kv, rows, d = _check(qkv, positions, inv_freq, keys, values, cache_position, q_heads)
    q = torch.empty((1, q_heads, 1, d), dtype=qkv.dtype, device=qkv.device)
    positions = positions.float().contiguous()  # the kernel reads axis a at offset a (no copy when already so)
    _kernel()[(q_heads + kv,)](qkv.contiguous(), positions, inv_freq, axis_map, cache_position, q, keys, values, rows,
                               float(attrs.scale), q_heads, kv, F=inv_freq.shape[0], D=d,
                               INTERLEAVED=bool(attrs.interleaved), PDL=pdl, **launch(pdl), num_warps=1)
    return q


def rotate_into_cache_reference(qkv, positions, inv_freq, axis_map, attrs, keys, values, cache_position,
                                q_heads: int, pdl: bool = False):
    """`rotate_into_cache` in torch (fp32, one rounding): the CPU form and the kernel's oracle."""
    kv, _, d = _check(qkv, positions, inv_freq, keys, values, cache_position, q_heads)
    heads = qkv.reshape(1, q_heads + 2 * kv, 1, d).float()  # (B, H, S, D)
    rot = video_rope_torch(heads[:, : q_heads + kv], positions.float(), inv_freq, axis_map,
                           replace(attrs, layout=LAYOUT_BHSD)).to(qkv.dtype)
    keys.index_copy_(2, cache_position, rot[:, q_heads:])
    values.index_copy_(2, cache_position, heads[:, q_heads + kv :].to(qkv.dtype))
    return rot[:, :q_heads].contiguous()
