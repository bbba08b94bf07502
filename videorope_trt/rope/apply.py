"""The reference rotation (the `VideoRope` op contract, `rope/contract.py`) in numpy and in torch.

Both are written for clarity: they gather one angle per (batch, token, frequency) from the position rows, then
rotate pairs. Every fast path (CUDA kernel, TensorRT plugin, ONNX forms) is checked against these.
"""

from __future__ import annotations

import numpy as np

from videorope_trt.rope.contract import LAYOUT_BHSD, MAX_AXES, RotaryAttrs


def _check(x_shape, pos_shape, f, axis_map, attrs: RotaryAttrs, map_len=None):
    """Shapes always; the axis_map's values only when given (None: they live on a device, and reading them back
    would synchronize, which a CUDA-graph capture forbids)."""
    if len(x_shape) != 4:
        raise ValueError(f"VideoRope: x must be 4-D (B,H,S,D) or (B,S,H,D), got shape {tuple(x_shape)}")
    b, s, d = x_shape[0], x_shape[2 if attrs.layout == LAYOUT_BHSD else 1], x_shape[3]
    if len(pos_shape) != 3 or not 1 <= pos_shape[0] <= MAX_AXES:
        raise ValueError(f"VideoRope: positions must be (A, B, S) with 1 <= A <= {MAX_AXES}, got shape "
                         f"{tuple(pos_shape)}")
    if tuple(pos_shape[1:]) != (b, s):
        raise ValueError(f"VideoRope: positions (A, B, S) = {tuple(pos_shape)} does not match x's B={b}, S={s}")
    if 2 * f > d or f == 0:
        raise ValueError(f"VideoRope: inv_freq has {f} frequencies; expected 1..{d // 2} for head dim {d}")
    n = len(axis_map) if axis_map is not None else map_len
    if n != f:
        raise ValueError(f"VideoRope: axis_map has {n} entries, inv_freq {f}; they must be equal")
    if axis_map is None:
        return
    amin, amax = int(np.min(axis_map)), int(np.max(axis_map))
    if amin < 0 or amax >= pos_shape[0]:
        raise ValueError(f"VideoRope: axis_map values must be in [0, {pos_shape[0]}), got range [{amin}, {amax}]")


def _pair_index(f: int, interleaved: int):
    """Indices of the first and second element of each rotated pair."""
    k = np.arange(f)
    return (2 * k, 2 * k + 1) if interleaved else (k, k + f)


def video_rope_numpy(x, positions, inv_freq, axis_map, attrs: RotaryAttrs = RotaryAttrs()) -> np.ndarray:
    """numpy reference of `VideoRope`, result in x's dtype.

    The angle is the fp32 product position × inv_freq, as the contract defines it (so every implementation rounds
    it the same way); cos, sin and the rotation are then evaluated in float64 for an exact oracle.
    """
    positions = np.asarray(positions, dtype=np.float32)
    inv_freq = np.asarray(inv_freq, dtype=np.float32)
    axis_map = np.asarray(axis_map, dtype=np.int64)
    _check(x.shape, positions.shape, inv_freq.shape[0], axis_map, attrs)
    ang = (positions[axis_map].transpose(1, 2, 0) * inv_freq).astype(np.float64)  # (B, S, F), fp32 product
    cos, sin = np.cos(ang) * attrs.scale, np.sin(ang) * attrs.scale
    xs = x.astype(np.float64)
    if attrs.layout == LAYOUT_BHSD:  # broadcast (B, S, F) over heads
        cos, sin = cos[:, None], sin[:, None]
    else:
        cos, sin = cos[:, :, None], sin[:, :, None]
    i1, i2 = _pair_index(inv_freq.shape[0], attrs.interleaved)
    y = xs.copy()
    x1, x2 = xs[..., i1], xs[..., i2]
    y[..., i1] = x1 * cos - x2 * sin
    y[..., i2] = x2 * cos + x1 * sin
    return y.astype(x.dtype)


def video_rope_torch(x, positions, inv_freq, axis_map, attrs: RotaryAttrs = RotaryAttrs()):
    """torch implementation of `VideoRope` (eager; angles in fp32, rotation in x's dtype like transformers)."""
    import torch

    f = inv_freq.shape[0]
    host_map = axis_map.detach().numpy() if axis_map.device.type == "cpu" else None
    _check(tuple(x.shape), tuple(positions.shape), f, host_map, attrs, map_len=axis_map.shape[0])
    pos = positions.to(torch.float32)
    ang = pos[axis_map.long()].permute(1, 2, 0) * inv_freq.to(torch.float32)  # (B, S, F)
    cos, sin = (ang.cos() * attrs.scale).to(x.dtype), (ang.sin() * attrs.scale).to(x.dtype)
    cos, sin = (cos[:, None], sin[:, None]) if attrs.layout == LAYOUT_BHSD else (cos[:, :, None], sin[:, :, None])
    if attrs.interleaved:
        x1, x2 = x[..., 0 : 2 * f : 2], x[..., 1 : 2 * f : 2]
        rot = torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)
    else:
        x1, x2 = x[..., :f], x[..., f : 2 * f]
        rot = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    return torch.cat((rot, x[..., 2 * f :]), dim=-1) if 2 * f < x.shape[-1] else rot


# ---- VideoRopeCache: the rotation of q and k, then the rotated k and the v written into caller-owned caches

def check_cache_inputs(shapes: dict, dtypes: dict, attrs: RotaryAttrs):
    """Checks the shapes and dtypes of `VideoRopeCache`'s q, k, v, caches and write_offset (contract.py), given by
    input name; positions, inv_freq and axis_map are the rotation's, which checks them. Returns (B, S, KV, C)."""
    for name in ("q", "k", "v", "k_cache", "v_cache"):
        if len(shapes[name]) != 4:
            raise ValueError(f"VideoRopeCache: {name} must be 4-D, got shape {tuple(shapes[name])}")
    bhsd = attrs.layout == LAYOUT_BHSD
    q, k = tuple(shapes["q"]), tuple(shapes["k"])
    b, s, d = q[0], q[2 if bhsd else 1], q[3]
    kv = k[1 if bhsd else 2]
    if (k[0], k[2 if bhsd else 1], k[3]) != (b, s, d):
        raise ValueError(f"VideoRopeCache: k {k} must share B={b}, S={s}, D={d} with q {q} (layout {attrs.layout})")
    if tuple(shapes["v"]) != k:
        raise ValueError(f"VideoRopeCache: v must have k's shape {k}, got {tuple(shapes['v'])}")
    kc, vc = tuple(shapes["k_cache"]), tuple(shapes["v_cache"])
    if (kc[0], kc[1], kc[3]) != (b, kv, d) or vc != kc:
        raise ValueError(f"VideoRopeCache: k_cache and v_cache must both be (B, KV, C, D) = ({b}, {kv}, C, {d}), "
                         f"got {kc} and {vc}")
    if tuple(shapes["write_offset"]) != (b,):
        raise ValueError(f"VideoRopeCache: write_offset must be ({b},) (one offset per sequence), got "
                         f"{tuple(shapes['write_offset'])}")
    if str(dtypes["write_offset"]).split(".")[-1] != "int32":
        raise ValueError(f"VideoRopeCache: write_offset must be int32, got {dtypes['write_offset']}")
    others = {n: dtypes[n] for n in ("k", "v", "k_cache", "v_cache") if dtypes[n] != dtypes["q"]}
    if others:
        raise ValueError(f"VideoRopeCache: q, k, v, k_cache and v_cache must share one dtype; q is {dtypes['q']}, "
                         f"got {others}")
    return b, s, kv, kc[2]


def video_rope_cache_numpy(q, k, v, positions, inv_freq, axis_map, k_cache, v_cache, write_offset,
                           attrs: RotaryAttrs = RotaryAttrs()):
    """numpy reference of `VideoRopeCache`: (q_rot, k_cache_out, v_cache_out), new arrays in the inputs' dtype
    (float64 inputs give a float64 oracle). Written as the contract reads: one row per (b, s), skipped outside."""
    arrays = dict(q=q, k=k, v=v, k_cache=k_cache, v_cache=v_cache, write_offset=write_offset)
    arrays = {n: np.asarray(a) for n, a in arrays.items()}
    b, s, _, c = check_cache_inputs({n: a.shape for n, a in arrays.items()}, {n: a.dtype for n, a in arrays.items()},
                                    attrs)
    q_rot = video_rope_numpy(arrays["q"], positions, inv_freq, axis_map, attrs)
    k_rot = video_rope_numpy(arrays["k"], positions, inv_freq, axis_map, attrs)
    v = arrays["v"]
    if attrs.layout != LAYOUT_BHSD:  # the caches are (B, KV, C, D) whatever the layout
        k_rot, v = k_rot.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
    k_out, v_out = arrays["k_cache"].copy(), arrays["v_cache"].copy()
    for bi in range(b):
        for si in range(s):
            row = int(arrays["write_offset"][bi]) + si
            if 0 <= row < c:
                k_out[bi, :, row] = k_rot[bi, :, si]
                v_out[bi, :, row] = v[bi, :, si]
    return q_rot, k_out, v_out


def video_rope_cache_torch(q, k, v, positions, inv_freq, axis_map, k_cache, v_cache, write_offset,
                           attrs: RotaryAttrs = RotaryAttrs()):
    """torch implementation of `VideoRopeCache` (eager): new cache tensors, no host synchronization.

    Each token (b, s) writes row r = clamp(write_offset[b] + s, 0, C - 1) with the value that row must end with: its
    own rotated key when the row is its own, else what the row's real writer (token r - write_offset[b]) or the
    cache holds. Tokens outside the cache thus rewrite a row with its final value, so duplicates cannot disagree."""
    import torch

    tensors = dict(q=q, k=k, v=v, k_cache=k_cache, v_cache=v_cache, write_offset=write_offset)
    b, s, _, c = check_cache_inputs({n: tuple(t.shape) for n, t in tensors.items()},
                                    {n: t.dtype for n, t in tensors.items()}, attrs)
    q_rot = video_rope_torch(q, positions, inv_freq, axis_map, attrs)
    k_rot = video_rope_torch(k, positions, inv_freq, axis_map, attrs)
    if attrs.layout == LAYOUT_BHSD:  # index below as (B, S, KV, D)
        k_rot, v = k_rot.transpose(1, 2), v.transpose(1, 2)
    k_out, v_out = k_cache.clone(), v_cache.clone()
    if s == 0 or c == 0:
        return q_rot, k_out, v_out
    off = write_offset.to(torch.int64)[:, None]
    rows = (off + torch.arange(s, device=off.device)).clamp(0, c - 1)  # (B, S)
    rel = rows - off  # the token whose row this is, if any
    own = ((rel >= 0) & (rel < s))[..., None, None]
    src = rel.clamp(0, s - 1)
    bi = torch.arange(b, device=off.device)[:, None].expand(b, s)
    for out, new, cache in ((k_out, k_rot, k_cache), (v_out, v, v_cache)):
        out[bi, :, rows] = torch.where(own, new[bi, src], cache[bi, :, rows])
    return q_rot, k_out, v_out
