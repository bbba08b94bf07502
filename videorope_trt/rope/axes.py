"""Frequency-allocation rules: which position row each rotary frequency k (0 = highest) reads.

Rules are written for F = head_dim/2 frequency pairs and scale by the same fractions as the D = 128 originals
(D = 64 for the tiny test model: M-RoPE sections [8, 12, 12]; LTA: 24 spatial pairs alternating h/w, last 8
pairs t). Row numbers: 0 = t, 1 = h, 2 = w (VRoPE: its four directions 0..3).
"""

from __future__ import annotations

import numpy as np


def _split(f: int, parts, name: str):
    """Scale section sizes given for F = 64 to F pairs; F must scale them to whole numbers."""
    if f <= 0 or any((s * f) % 64 for s in parts):
        raise ValueError(f"{name}: head_dim {2 * f} does not scale the D=128 sections {list(parts)} evenly")
    return [s * f // 64 for s in parts]


def all_rows(f: int) -> np.ndarray:
    """1-D variants: every frequency reads row 0 (all rows are equal anyway)."""
    return np.zeros(f, dtype=np.int32)


def mrope_sections(f: int) -> np.ndarray:
    """M-RoPE `mrope_section = [16, 24, 24]`: t gets the highest frequencies, then h, then w."""
    t, h, w = _split(f, (16, 24, 24), "M-RoPE")
    return np.repeat(np.arange(3, dtype=np.int32), [t, h, w])


def lta(f: int) -> np.ndarray:
    """Low-frequency Temporal Allocation: spatial pairs alternate h (even k) / w (odd k), the last quarter → t.

    Same as the official `apply_m_modify_multimodal_rotary_pos_emb` ([16, 24, 24] → 48 spatial then 16 t).
    """
    spatial, t = _split(f, (48, 16), "LTA")
    k = np.arange(spatial)
    return np.concatenate([np.where(k % 2 == 0, 1, 2), np.zeros(t, dtype=np.int64)]).astype(np.int32)


def ttxy(f: int) -> np.ndarray:
    """VideoRoPE++ `ttxy_rope`: the pattern [t t h w h w h w] repeated over all pairs."""
    _split(f, (8,), "ttxy")
    return np.tile(np.array([0, 0, 1, 2, 1, 2, 1, 2], dtype=np.int32), f // 8)


def interleaved_mrope(f: int) -> np.ndarray:
    """Qwen3-VL interleaved M-RoPE, sections [24, 20, 20]: k % 3 for k < 3*20 (scaled), the rest → t."""
    _, h, w = _split(f, (24, 20, 20), "Qwen3-VL M-RoPE")
    out = np.zeros(f, dtype=np.int32)
    k = np.arange(f)
    out[(k % 3 == 1) & (k < 3 * h)] = 1
    out[(k % 3 == 2) & (k < 3 * w)] = 2
    return out


def period(rows):
    """Interleave with a fixed period: frequency k reads rows[k % len(rows)]."""

    def rule(f: int) -> np.ndarray:
        return np.asarray(rows, dtype=np.int32)[np.arange(f) % len(rows)]

    rule.__doc__ = f"frequency k reads row {list(rows)}[k % {len(rows)}]"
    return rule
