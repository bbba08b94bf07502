"""Index rules: where each token of a vision block sits, and where the text after it starts.

A vision rule takes the current position `cur` (where the block starts: one past the text before it), a
`Segment` and the resolved parameters, and returns `(rows, next_cur)`: rows (A, t*h*w) float64 in token order
(frame-major, then row i, then column j) and the position the next text token gets. Text rules are in
`positions.py`. Rules and sources: docs/facts.md, "Position indices of the RoPE variants" (the official VideoRoPE
code: `get_t_scale_rope_index`, `get_input_t_scale_modify_positions`, the V-NIAH evaluation's
`get_m_modify_*_index`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from videorope_trt.rope.segments import Segment

#: Frames per temporal slice in Qwen2-VL / Qwen2.5-VL (`temporal_patch_size`).
TEMPORAL_PATCH_SIZE = 2


@dataclass(frozen=True)
class IndexParams:
    """Parameters an index rule may read, already defaulted by the variant."""

    delta: float = 1.0  # ATS temporal spacing
    fps: float = 2.0  # sampling rate of this video (Qwen2.5-VL absolute time)
    tokens_per_second: float = 2.0
    order: str = "code"  # VRoPE direction order


def grid(seg: Segment):
    """Frame, row and column index of every token of the block, float64, token order."""
    f, i, j = np.meshgrid(np.arange(seg.t), np.arange(seg.h), np.arange(seg.w), indexing="ij")
    return f.ravel().astype(np.float64), i.ravel().astype(np.float64), j.ravel().astype(np.float64)


def _rows3(t, h, w):
    return np.stack([t, h, w])


# -- 1-D rules (three equal rows) ---------------------------------------------------------------------------


def vanilla(cur, seg, p):
    """Flattened 1-D index; text after continues at cur + t*h*w."""
    flat = cur + np.arange(seg.n, dtype=np.float64)
    return _rows3(flat, flat, flat), cur + seg.n


def tad(cur, seg, p):
    """TAD-RoPE as VideoRoPE implements it: vanilla index + temporal index (+1 per slice and per text token)."""
    f, i, j = grid(seg)
    pos = cur + f * (seg.h * seg.w + 1) + i * seg.w + j
    return _rows3(pos, pos, pos), cur + seg.t * (seg.h * seg.w + 1)


# -- M-RoPE family ------------------------------------------------------------------------------------------


def _mrope_grid(cur, seg, t_offsets):
    f, i, j = grid(seg)
    rows = _rows3(cur + t_offsets[f.astype(np.int64)], cur + i, cur + j)
    return rows


def m_rope(cur, seg, p):
    """Qwen2-VL: (s+f, s+i, s+j); text after at the block's max over all rows + 1."""
    rows = _mrope_grid(cur, seg, np.arange(seg.t, dtype=np.float64))
    return rows, float(rows.max()) + 1


def qwen25_mrope(cur, seg, p):
    """Qwen2.5-VL: t = s + floor(f * second_per_grid_t * tokens_per_second), in float32 like transformers.

    Images have one slice, so their t is s whatever the interval.
    """
    spg = np.float32(TEMPORAL_PATCH_SIZE / p.fps)
    interval = np.float32(p.tokens_per_second) * spg
    t_off = np.floor(np.arange(seg.t, dtype=np.float32) * interval).astype(np.float64)
    rows = _mrope_grid(cur, seg, t_off)
    return rows, float(rows.max()) + 1


def qwen3_mrope(cur, seg, p):
    """Qwen3-VL: every slice is a one-frame image (t = s_f) and the next slice starts at s_f + max(h, w).

    Qwen3-VL's processor puts timestamp text between slices; a bare video segment here has none.
    """
    rows, step = [], max(seg.h, seg.w)
    one = Segment("image", seg.h * seg.w, 1, seg.h, seg.w)
    for f in range(seg.t):
        rows.append(_mrope_grid(cur + f * step, one, np.zeros(1)))
    return np.concatenate(rows, axis=1), cur + seg.t * step


def mrope_t_after(cur, seg, p):
    """`m_modify_no_center_rope`: the M-RoPE grid, text after at the t-row max + 1 (s + t)."""
    rows = _mrope_grid(cur, seg, np.arange(seg.t, dtype=np.float64))
    return rows, float(rows[0].max()) + 1


# -- VideoRoPE: diagonal layout (DL) with adjustable temporal spacing (ATS) ---------------------------------


def _diagonal(cur, seg, delta):
    """t = s + δf; h = t + i - ⌊(H-1)/2⌋; w = t + j - ⌊(W-1)/2⌋ (integer centring, as the official code)."""
    f, i, j = grid(seg)
    t = cur + delta * f
    return _rows3(t, t + i - (seg.h - 1) // 2, t + j - (seg.w - 1) // 2)


def diagonal_t_after(cur, seg, p):
    """`videorope`, `m_modify_rope`: text after at the t-row max + 1 = s + δ(T-1) + 1."""
    rows = _diagonal(cur, seg, p.delta)
    return rows, float(rows[0].max()) + 1


def diagonal_max_after(cur, seg, p):
    """`videorope_pp`, `m_modify_margin_rope`, `ttxy_rope`: text after at the max over all rows + 1."""
    rows = _diagonal(cur, seg, p.delta)
    return rows, float(rows.max()) + 1


def diagonal_paper(cur, seg, p):
    """VideoRoPE paper Eq. (7): offsets i - H/2, j - W/2 by real division; text after at s + δT."""
    f, i, j = grid(seg)
    t = cur + p.delta * f
    return _rows3(t, t + i - seg.h / 2, t + j - seg.w / 2), cur + p.delta * seg.t


# -- VRoPE (4 rows) -----------------------------------------------------------------------------------------

#: Which of the code's components (c0..c3) each row holds; the paper's Eq. 9 order is (v1, v2, v3, v4).
VROPE_ORDERS = {"code": (0, 1, 2, 3), "paper": (0, 2, 3, 1)}


def vrope(cur, seg, p):
    """VRoPE: four symmetric directions, frame stride h+w-1; text after at s + T(h+w-1).

    code component c0 = base+i+j, c1 = base+i+(W-1-j), c2 = base+(H-1-i)+j, c3 = base+(H-1-i)+(W-1-j),
    base = s + f(H+W-1). The paper's (v1, v2, v3, v4) is (c0, c2, c3, c1).
    """
    if p.order not in VROPE_ORDERS:
        raise ValueError(f"vrope: order must be one of {sorted(VROPE_ORDERS)}, got {p.order!r}")
    f, i, j = grid(seg)
    stride = seg.h + seg.w - 1
    base = cur + f * stride
    ri, rj = seg.h - 1 - i, seg.w - 1 - j
    comps = np.stack([base + i + j, base + i + rj, base + ri + j, base + ri + rj])
    return comps[list(VROPE_ORDERS[p.order])], cur + seg.t * stride


# -- Su's RoPE-Tie / RoPE-TV (rows t, h, w = frame, row x, column y) ----------------------------------------


def rope_tie(cur, seg, p):
    """RoPE-Tie v1 (images only): (L + x(w+1), L + y(h+1)), x, y 1-based, L = last text position.

    The t row repeats the h row (RoPE-Tie has no time axis and its frequencies never read the t row).
    Text after starts at L + (w+1)(h+1).
    """
    if seg.t != 1:
        raise ValueError(f"rope_tie has no video rule (images only); got a video with t={seg.t} slices")
    last = cur - 1
    _, i, j = grid(seg)
    x = last + (i + 1) * (seg.w + 1)
    y = last + (j + 1) * (seg.h + 1)
    return _rows3(x, x, y), last + (seg.w + 1) * (seg.h + 1)


def rope_tv(cur, seg, p):
    """RoPE-TV (RoPE-Tie-v2) 3-D: (β3 + z, β1 + x, β2 + y), β = L + (N - size)/2, 1-based; next text L + N + 1.

    Half-integer positions are expected. An image is the 3-D form with one frame.
    """
    last, n = cur - 1, seg.n
    f, i, j = grid(seg)
    z = last + (n - seg.t) / 2 + f + 1
    x = last + (n - seg.h) / 2 + i + 1
    y = last + (n - seg.w) / 2 + j + 1
    return _rows3(z, x, y), last + n + 1
