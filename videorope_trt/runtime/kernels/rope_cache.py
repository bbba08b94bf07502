"""The decode step's q/k/v product, rotation and cache write as one kernel: the layer's input in, the rotated
query out, the rotated key and the value written into the static cache's row for this token.

Unfused, this is the product, the rotary kernel and two `index_copy_` launches per layer; as two kernels (the
product, then rotation and both writes) the second one is a dependent launch of its own in every layer. Here the
product's programs take weight rows in rotation pairs (channel c and its partner: c + F in the rotate-half
layout, c + 1 interleaved), so each program holds both halves of its pairs in fp32 and rotates them before the
only rounding: a query head's pairs go to the output, a KV head's key pairs to `keys[0, j, position]`, its value
rows to `values[0, j, position]`. The product's input is RMS-normed on the way in, as `gemv.gemv(norm=...)`,
and it shares that kernel's main loop (`gemv._row_sums`), with the same programmatic dependent launch.

The rotation is the `VideoRope` contract (`rope/apply.py`): angle = position[axis_map[f]] × inv_freq[f] in fp32,
rotate-half or interleaved pairs, the channels past 2F unrotated, times `scale`. Its sine and cosine are accurate
at any angle, as the CUDA kernel's (`plugins/csrc/videorope_kernel.cu`): the fp32 angle is reduced to [-1, 1]
half-turns in fp64 and handed to sinpi/cospi, so the result does not hang on how a compiler lowers sin/cos of
angles that reach 10⁵ at long contexts. Batch 1 (the decode step's products take one row).
`project_into_cache_reference` is the same in torch (the product rounded once, then the rotation in fp32, as the
unfused step), for the CPU and as the kernel's oracle.
"""

from __future__ import annotations

import functools
from dataclasses import replace

import torch

from videorope_trt.rope.apply import video_rope_torch
from videorope_trt.rope.contract import LAYOUT_BHSD
from videorope_trt.runtime.kernels import gemv


@functools.cache
def _kernel():
    import triton
    import triton.language as tl
    from triton.language.extra import libdevice

    row_sums = gemv._row_sums()

    @triton.autotune(configs=gemv.autotune_configs(), key=["K", "HQ", "KV", "D", "NORM", "PDL"])
    @triton.jit
    def project_kernel(x_ptr, w_ptr, b_ptr, g_ptr, pos_ptr, freq_ptr, map_ptr, cpos_ptr, q_ptr, k_ptr, v_ptr, K, eps,
                       rows, scale, HQ, KV, HAS_BIAS: tl.constexpr, NORM: tl.constexpr, F: tl.constexpr,
                       D: tl.constexpr, INTERLEAVED: tl.constexpr, PDL: tl.constexpr, BLOCK_N: tl.constexpr,
                       BLOCK_K: tl.constexpr):
        half: tl.constexpr = D // 2
        pair = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)  # over the (HQ + 2 KV) x D/2 channel pairs
        ok = pair < (HQ + 2 * KV) * half
        head, c = pair // half, pair % half
        if INTERLEAVED:
            first, partner = 2 * c, 2 * c + 1
        else:  # rotated pairs (c, c + F); the unrotated channels 2F.. as (2F + j, 2F + j + D/2 - F)
            first, partner = tl.where(c < F, c, c + F), tl.where(c < F, c + F, c + half)
        ra, rb = head * D + first, head * D + partner
        # the angles come from the step's positions, written before this layer's first kernel: with PDL they are
        # ready before the wait in row_sums, so the sine and cosine are worked out while the kernel before ends
        rotated = (c < F) & (head < HQ + KV)  # queries and keys; values are copied
        f = tl.where(c < F, c, 0)
        inv_freq, axis = tl.load(freq_ptr + f), tl.load(map_ptr + f)
        half_turns = (tl.load(pos_ptr + axis) * inv_freq).to(tl.float64) * 0.3183098861837907  # the fp32 angle / pi
        turns = (half_turns - 2.0 * libdevice.rint(half_turns * 0.5)).to(tl.float32)  # in [-1, 1]
        cos, sin = libdevice.cospi(turns), libdevice.sinpi(turns)
        ya, yb = row_sums(x_ptr, g_ptr, w_ptr + ra[:, None].to(tl.int64) * K, w_ptr + rb[:, None].to(tl.int64) * K,
                          ok[:, None], K, eps, NORM, True, PDL, BLOCK_N, BLOCK_K)
        if HAS_BIAS:
            ya += tl.load(b_ptr + ra, mask=ok, other=0.0).to(tl.float32)
            yb += tl.load(b_ptr + rb, mask=ok, other=0.0).to(tl.float32)
        oa = tl.where(rotated, (ya * cos - yb * sin) * scale, ya)
        ob = tl.where(rotated, (yb * cos + ya * sin) * scale, yb)
        is_q, is_v = head < HQ, head >= HQ + KV
        tl.store(q_ptr + ra, oa.to(q_ptr.dtype.element_ty), mask=ok & is_q)
        tl.store(q_ptr + rb, ob.to(q_ptr.dtype.element_ty), mask=ok & is_q)
        j = tl.where(is_v, head - HQ - KV, head - HQ)
        row = (j * rows + tl.load(cpos_ptr)).to(tl.int64) * D
        into = tl.where(is_v, v_ptr, k_ptr) + row
        tl.store(into + first, oa.to(k_ptr.dtype.element_ty), mask=ok & ~is_q)
        tl.store(into + partner, ob.to(k_ptr.dtype.element_ty), mask=ok & ~is_q)

    return project_kernel


def _check(channels: int, positions, inv_freq, keys, values, cache_position, q_heads):
    """Shapes and layouts the kernel indexes by hand (`channels`: q/k/v values of the token); returns (KV heads,
    cache rows, head dim)."""
    kv, rows, d = keys.shape[1], keys.shape[2], keys.shape[3]
    if keys.shape[0] != 1 or channels != (q_heads + 2 * kv) * d or positions.numel() != positions.shape[0]:
        raise ValueError(f"rope_cache: expected one token (batch 1): q/k/v of {q_heads} + 2 x {kv} heads of {d}, "
                         f"positions (A, 1, 1) and a (1, {kv}, rows, {d}) cache; got {channels} q/k/v channels, "
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


def project_into_cache(x, weight, bias, norm, eps: float, positions, inv_freq, axis_map, attrs, keys, values,
                       cache_position, q_heads: int, pdl: bool = False):
    """x (1, 1, K) the layer's input; weight ((Hq + 2 KV) * D, K) and bias the fused q/k/v projection, `norm` (K,)
    or None its input RMS norm (`gemv.gemv`); positions (A, 1, 1) fp32, cache_position (1,) int64 on the device →
    the rotated query (1, Hq, 1, D); keys/values (1, KV, rows, D) get this token's row. `pdl`: as `gemv.gemv`."""
    gemv.check_launch("project_into_cache", x, weight, pdl)
    _, k = gemv._check_epilogue(weight, bias, norm, False, None)
    kv, rows, d = _check(weight.shape[0], positions, inv_freq, keys, values, cache_position, q_heads)
    q = torch.empty((1, q_heads, 1, d), dtype=x.dtype, device=x.device)
    positions = positions.float().contiguous()  # the kernel reads axis a at offset a (no copy when already so)
    pairs = (q_heads + 2 * kv) * d // 2
    grid = lambda meta: ((pairs + meta["BLOCK_N"] - 1) // meta["BLOCK_N"],)
    _kernel()[grid](x.contiguous(), weight, bias if bias is not None else weight, norm if norm is not None else weight,
                    positions, inv_freq, axis_map, cache_position, q, keys, values, k, float(eps), rows,
                    float(attrs.scale), q_heads, kv, HAS_BIAS=bias is not None, NORM=norm is not None,
                    F=inv_freq.shape[0], D=d, INTERLEAVED=bool(attrs.interleaved), PDL=pdl, **gemv.launch(pdl))
    return q


def project_into_cache_reference(x, weight, bias, norm, eps: float, positions, inv_freq, axis_map, attrs, keys,
                                 values, cache_position, q_heads: int, pdl: bool = False):
    """`project_into_cache` in torch: `gemv.gemv_reference` (one rounding), then `rotate_into_cache_reference`."""
    qkv = gemv.gemv_reference(x, weight, bias, norm=norm, eps=eps)
    return rotate_into_cache_reference(qkv, positions, inv_freq, axis_map, attrs, keys, values, cache_position, q_heads)


def rotate_into_cache_reference(qkv, positions, inv_freq, axis_map, attrs, keys, values, cache_position,
                                q_heads: int):
    """The rotation of a token's q/k/v (1, 1, (Hq + 2 KV) * D) and both cache writes, in torch (fp32, one
    rounding); returns the rotated query (1, Hq, 1, D)."""
    if qkv.numel() != qkv.shape[-1]:
        raise ValueError(f"rope_cache: expected one token (batch 1); got q/k/v {tuple(qkv.shape)}")
    kv, _, d = _check(qkv.shape[-1], positions, inv_freq, keys, values, cache_position, q_heads)
    heads = qkv.reshape(1, q_heads + 2 * kv, 1, d).float()  # (B, H, S, D)
    rot = video_rope_torch(heads[:, : q_heads + kv], positions.float(), inv_freq, axis_map,
                           replace(attrs, layout=LAYOUT_BHSD)).to(qkv.dtype)
    keys.index_copy_(2, cache_position, rot[:, q_heads:])
    values.index_copy_(2, cache_position, heads[:, q_heads + kv :].to(qkv.dtype))
    return rot[:, :q_heads].contiguous()
