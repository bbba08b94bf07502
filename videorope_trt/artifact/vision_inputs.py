"""What the vision tower needs besides the patches, computed on the host: the (row, column) ids of one temporal
slice, and how a set of grids splits into calls.

Attention in Qwen2-VL's tower stays inside a temporal slice, and every slice of one grid has h × w patches with the
same ids, so a call takes whole slices of one grid and the ids of one slice (`models/vision_tower.py`): its slices
form one batch of equal length, attended with no mask. Slices of different sizes (an image beside a video, two
videos of different frame sizes) go to different calls.

numpy only: the runtime of every backend calls it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def check_grids(grid_thw, spatial_merge_size: int, patches: int | None = None) -> list:
    """[(t, h, w)] of `grid_thw` (n, 3) in patches, each checked (t ≥ 1, h and w multiples of the merge size) and,
    with `patches`, their total against it."""
    grids = np.asarray(grid_thw, dtype=np.int64).reshape(-1, 3)
    m = int(spatial_merge_size)
    out = [tuple(int(v) for v in g) for g in grids]
    for t, h, w in out:
        if t < 1 or h < m or w < m or h % m or w % m:
            raise ValueError(f"vision: grid (t, h, w) = {(t, h, w)}: expected t >= 1 and h, w positive multiples of "
                             f"the merge size {m}")
    if patches is not None and sum(t * h * w for t, h, w in out) != patches:
        raise ValueError(f"vision: grids {[list(g) for g in out]} hold {sum(t * h * w for t, h, w in out)} patches, "
                         f"pixel_values has {patches} rows")
    return out


def slice_pos_ids(h: int, w: int, spatial_merge_size: int) -> np.ndarray:
    """(h*w, 2) int64 (row, column) of each patch of one temporal slice, in the processor's order: merge × merge
    blocks, row-major over blocks, row-major inside each block."""
    m = int(spatial_merge_size)
    if h % m or w % m:
        raise ValueError(f"vision: a slice of {h} x {w} patches is not a whole number of {m} x {m} merge blocks")
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    by_block = [a.reshape(h // m, m, w // m, m).transpose(0, 2, 1, 3).ravel() for a in (rows, cols)]
    return np.stack(by_block, axis=-1).astype(np.int64)


@dataclass(frozen=True)
class VisionCall:
    """One call of the vision graph: patches [start, stop) of the call's input, whole slices of h × w patches."""

    start: int
    stop: int
    h: int
    w: int


def vision_calls(grid_thw, spatial_merge_size: int, max_patches: int | None = None) -> list:
    """The calls that encode the patches of `grid_thw` (n, 3), in order: each grid on its own, in chunks of whole
    temporal slices of at most `max_patches` patches (None: a grid per call)."""
    calls, start = [], 0
    for t, h, w in check_grids(grid_thw, spatial_merge_size):
        per_slice = h * w
        if max_patches is not None and per_slice > max_patches:
            raise ValueError(f"vision: one temporal slice of grid {(t, h, w)} has {per_slice} patches; a call takes "
                             f"at most {max_patches} (a smaller frame size or a larger plan)")
        chunk = t if max_patches is None else max_patches // per_slice
        for first in range(0, t, chunk):
            n = min(chunk, t - first)
            calls.append(VisionCall(start + first * per_slice, start + (first + n) * per_slice, h, w))
        start += t * per_slice
    return calls


def example_grid(spatial_merge_size: int) -> np.ndarray:
    """The grid traced at export: 2 frames of 2 × 3 merge blocks (any other grid runs through the same graph)."""
    m = spatial_merge_size
    return np.array([[2, 2 * m, 3 * m]], dtype=np.int64)
