"""Positions: segments → (A, L) float32 position rows for one sample, batches with left padding and each
sample's decode continuation (`rope_deltas`), and decode-time positions.

rope_deltas = (the position a text token appended at the end would get) − decode_step × L, where L is the
padded length; decode position = decode_step × cache_position + rope_deltas on every row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from videorope_trt.rope.index_rules import IndexParams
from videorope_trt.rope.segments import parse_segments
from videorope_trt.rope.variants import Variant, get_variant


def _finite(value, name: str, positive: bool = False) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(x) or (positive and x <= 0):
        raise ValueError(f"{name} must be a finite{' positive' if positive else ''} number, got {value!r}")
    return x


def _resolve(v: Variant, delta, tokens_per_second, order) -> IndexParams:
    """Fill the variant's defaults; reject parameters the variant does not have."""
    if delta is not None and v.default_delta is None:
        raise ValueError(f"variant {v.name!r} has no temporal spacing; delta must be None, got {delta!r}")
    if order != "code" and not v.uses_order:
        raise ValueError(f"variant {v.name!r} has no direction order; order must be 'code', got {order!r}")
    d = v.default_delta if delta is None else _finite(delta, "delta", positive=True)
    tps = 2.0 if tokens_per_second is None else _finite(tokens_per_second, "tokens_per_second", positive=True)
    return IndexParams(delta=d if d is not None else 1.0, tokens_per_second=tps, order=order)


def _fps_list(fps, num_videos: int) -> list[float]:
    """One sampling rate per video: a number (all videos), a sequence (one each) or None (2.0 fps)."""
    if fps is None:
        return [2.0] * num_videos
    if np.ndim(fps) == 0:
        return [_finite(fps, "fps", positive=True)] * num_videos
    vals = [_finite(x, "fps", positive=True) for x in fps]
    if len(vals) != num_videos:
        raise ValueError(f"fps has {len(vals)} entries but the layout has {num_videos} video(s); give one per video")
    return vals


def layout_positions(variant, segments, *, start=0, delta=None, fps=None, tokens_per_second=None, order="code"):
    """(rows (A, L) float64, next text position) — the exact values before the float32 cast."""
    v = get_variant(variant)
    segs = parse_segments(segments)
    params = _resolve(v, delta, tokens_per_second, order)
    fps_iter = iter(_fps_list(fps, sum(s.kind == "video" for s in segs)))
    cur, rows = _finite(start, "start"), []
    for seg in segs:
        if seg.kind == "text":
            pos = cur + v.decode_step * np.arange(seg.n, dtype=np.float64)
            rows.append(np.broadcast_to(pos, (v.num_axes, seg.n)))
            cur += v.decode_step * seg.n
            continue
        p = params
        if seg.kind != "image":
            p = IndexParams(params.delta, next(fps_iter), params.tokens_per_second, params.order)
        block, cur = v.index_rule(cur, seg, p)
        rows.append(block)
    return np.concatenate(rows, axis=1), float(cur)


def position_ids(variant, segments, *, start=0, delta=None, fps=None, tokens_per_second=None,
                 order="code") -> np.ndarray:
    """Positions of a layout: float32 (A, L); A = 3 rows (t, h, w) for Qwen-style variants, 4 for `vrope`.

    `segments`: `("text", n)`, `("image", h, w)`, `("video", t, h, w)` with h, w on the LLM grid after the
    2x2 merge and t in temporal slices. `start`: the first position. `delta`: ATS spacing (variants with
    ATS only; default 2.0 for `videorope`). `fps` (one number or one per video) and `tokens_per_second`:
    absolute time (`qwen25_mrope`; ignored by the others). `order`: VRoPE direction order, `code` or `paper`.
    """
    rows, _ = layout_positions(variant, segments, start=start, delta=delta, fps=fps,
                               tokens_per_second=tokens_per_second, order=order)
    return rows.astype(np.float32)


@dataclass(frozen=True)
class BatchPositions:
    positions: np.ndarray  # (A, B, L) float32, left padded (padding slots hold 0)
    attention_mask: np.ndarray  # (B, L) int64, 0 on padding
    rope_deltas: np.ndarray  # (B,) float32: decode position = decode_step * cache_position + rope_deltas
    decode_step: int = 1


def _per_sample_fps(fps, b: int):
    if not isinstance(fps, (list, tuple, np.ndarray)) or (isinstance(fps, np.ndarray) and fps.ndim == 0):
        return [fps] * b
    if len(fps) != b:
        raise ValueError(f"batch fps must be one number or one entry per sample ({b}), got {len(fps)} entries")
    return list(fps)


def batch_positions(variant, batch_segments, *, fps=None, **params) -> BatchPositions:
    """Positions of several samples padded on the left to the longest, with each sample's `rope_deltas`.

    `params` are those of `position_ids`, shared by every sample; `fps` is one number for all videos or one
    entry per sample (a number or a per-video sequence).
    """
    v = get_variant(variant)
    if isinstance(batch_segments, (str, bytes)) or not len(batch_segments):
        raise ValueError(f"batch_segments must be a non-empty sequence of layouts, got {batch_segments!r}")
    samples = [layout_positions(v, segs, fps=f, **params) for segs, f in
               zip(batch_segments, _per_sample_fps(fps, len(batch_segments)))]
    b, length = len(samples), max(rows.shape[1] for rows, _ in samples)
    positions = np.zeros((v.num_axes, b, length), dtype=np.float64)
    mask = np.zeros((b, length), dtype=np.int64)
    deltas = np.zeros(b, dtype=np.float64)
    for k, (rows, next_pos) in enumerate(samples):
        n = rows.shape[1]
        positions[:, k, length - n:] = rows
        mask[k, length - n:] = 1
        deltas[k] = next_pos - v.decode_step * length
    return BatchPositions(positions.astype(np.float32), mask, deltas.astype(np.float32), v.decode_step)


def decode_positions(variant, rope_deltas, cache_position) -> np.ndarray:
    """(A, B, S) float32 = decode_step * cache_position + rope_deltas, equal on every row.

    `cache_position` counts padded tokens: (S,) shared by the batch, or (B, S) per sample; for a batch of
    padded length L the first generated token has cache_position L.
    """
    v = get_variant(variant)
    deltas = np.asarray(rope_deltas, dtype=np.float64).reshape(-1)
    cache = np.asarray(cache_position, dtype=np.float64)
    if cache.ndim == 0:
        cache = cache.reshape(1)
    if cache.ndim == 1:
        cache = np.broadcast_to(cache, (deltas.shape[0], cache.shape[0]))
    if cache.ndim != 2 or cache.shape[0] != deltas.shape[0]:
        raise ValueError(f"cache_position must be (S,) or (B, S) with B = {deltas.shape[0]}, got shape {cache.shape}")
    pos = v.decode_step * cache + deltas[:, None]
    return np.broadcast_to(pos, (v.num_axes,) + pos.shape).astype(np.float32)
