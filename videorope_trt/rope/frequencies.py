"""Frequencies: the axis map of a variant, `inv_freq` (plain or scaled), cos/sin tables and the rotation.

inv_freq[k] = theta^(-2k/D), k = 0..D/2-1; frequency k reads position row axis_map[k]; cos/sin are written
out twice (rotate-half layout: frequency k rotates the pair (k, k + D/2)).
"""

from __future__ import annotations

import numpy as np

from videorope_trt.rope.scalings import SCALINGS, scale_inv_freq
from videorope_trt.rope.variants import get_variant


def _half(head_dim) -> int:
    if isinstance(head_dim, bool) or not float(head_dim).is_integer() or head_dim <= 0 or int(head_dim) % 2:
        raise ValueError(f"head_dim must be a positive even integer, got {head_dim!r}")
    return int(head_dim) // 2


def axis_map(variant, head_dim) -> np.ndarray:
    """np.int32 (head_dim // 2,): the position row each frequency reads."""
    return get_variant(variant).axis_rule(_half(head_dim)).astype(np.int32)


def plain_inv_freq(head_dim, theta) -> np.ndarray:
    """theta^(-2k/D) in float64."""
    if not (np.isfinite(theta) and theta > 1):
        raise ValueError(f"theta must be a finite number > 1, got {theta!r}")
    f = _half(head_dim)
    return 1.0 / float(theta) ** (np.arange(f, dtype=np.float64) * 2 / (2 * f))


def inv_freq(head_dim, theta, scaling=None, **params) -> np.ndarray:
    """np.float32 (head_dim // 2,) rotary frequencies, optionally rescaled.

    `scaling`: None or one of `SCALINGS` (`ntk`, `yarn`, `mrope++`, `videorope++_v1`, `dynamic`,
    `videoropepp_dynamic`); params
    `factor` (4), `original_max_position` (32768), `seq_len` (the dynamic ones), `variant` (scalings that treat the
    time axis apart read its axis map).
    """
    base = plain_inv_freq(head_dim, theta)
    if scaling is None:
        if params:
            raise ValueError(f"scaling params {sorted(params)} given without a scaling; pick one of {sorted(SCALINGS)}")
        return base.astype(np.float32)
    return scale_inv_freq(scaling, base, float(theta), **params).astype(np.float32)


def rotary_tables(variant, positions, head_dim, theta, scaling=None, **params):
    """(cos, sin), each float32 (L, head_dim) in the rotate-half layout, for positions (A, L).

    Angles are formed in float64 from the float32 positions and float32 frequencies (what the op sees).
    """
    v = get_variant(variant)
    pos = np.asarray(positions, dtype=np.float32)
    if pos.ndim != 2 or pos.shape[0] != v.num_axes:
        raise ValueError(f"positions for {v.name!r} must be ({v.num_axes}, L), got shape {pos.shape}")
    freqs = inv_freq(head_dim, theta, scaling, **({"variant": v.name} | params) if scaling else params)
    amap = axis_map(v, head_dim)
    ang = pos[amap].T.astype(np.float64) * freqs.astype(np.float64)  # (L, F)
    ang = np.concatenate([ang, ang], axis=-1)
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


def _rotate_half(x, cat):
    half = x.shape[-1] // 2
    return cat((-x[..., half:], x[..., :half]))


def apply_rotary(x, cos, sin):
    """x * cos + rotate_half(x) * sin, numpy or torch (cos/sin broadcast against x's last two dims)."""
    if isinstance(x, np.ndarray):
        return x * cos + _rotate_half(x, lambda parts: np.concatenate(parts, axis=-1)) * sin
    import torch

    return x * cos + _rotate_half(x, lambda parts: torch.cat(parts, dim=-1)) * sin
