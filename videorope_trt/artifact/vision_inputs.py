"""The vision graph's host-side inputs: what Qwen2-VL's vision tower derives from `grid_thw` with Python loops,
computed on the host so that the graph needs none (2D rotary position ids and per-frame segment ids).

numpy only: the runtime of every backend calls it.
"""

from __future__ import annotations

import numpy as np


def host_inputs(grid_thw, spatial_merge_size: int) -> dict:
    """`rotary_pos_ids` (N, 2) int64 and `segment_ids` (N,) int64 for patches laid out as Qwen2-VL's processor does.

    grid_thw: (n, 3) in patches (t temporal slices, h and w patch rows/columns, both multiples of the merge size).
    Position ids run block-major over merge × merge blocks; every temporal slice of every grid is one segment.
    """
    grids = np.asarray(grid_thw, dtype=np.int64).reshape(-1, 3)
    m = int(spatial_merge_size)
    pos, seg, next_seg = [], [], 0
    for t, h, w in grids:
        if h % m or w % m:
            raise ValueError(f"vision: grid (t, h, w) = {(int(t), int(h), int(w))} is not a multiple of the merge size "
                             f"{m}")
        hh, ww = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        blocks = (h // m, m, w // m, m)
        frame = np.stack([hh.reshape(blocks).transpose(0, 2, 1, 3).ravel(),
                          ww.reshape(blocks).transpose(0, 2, 1, 3).ravel()], axis=-1)
        pos.append(np.tile(frame, (t, 1)))
        seg.append(np.repeat(np.arange(next_seg, next_seg + t), h * w))
        next_seg += int(t)
    return {"rotary_pos_ids": np.concatenate(pos).astype(np.int64), "segment_ids": np.concatenate(seg).astype(np.int64)}


def example_grid(spatial_merge_size: int) -> np.ndarray:
    """The grid traced at export: 2 frames of 2 × 3 merge blocks (any other grid runs through the same graph)."""
    m = spatial_merge_size
    return np.array([[2, 2 * m, 3 * m]], dtype=np.int64)
