"""Segments from a tokenized prompt, laid out the way Qwen2-VL's processor lays it out: each image (video)
is a run of grid_t*grid_h*grid_w / merge² `image_token_id` (`video_token_id`) placeholders, grids in order.
Everything else, `<|vision_start|>` / `<|vision_end|>` included, is text. Qwen3-VL puts timestamp text between
the slices of a video: pass one (1, h, w) grid per slice there (`np.repeat(grid, t, axis=0)` with t set to 1).
"""

from __future__ import annotations

import numpy as np


def _grids(grid_thw, what: str) -> list[tuple[int, int, int]]:
    if grid_thw is None:
        return []
    g = np.asarray(grid_thw)
    if g.ndim == 1 and g.shape[0] == 3:
        g = g[None]
    if g.ndim != 2 or g.shape[1] != 3 or (g.size and g.min() <= 0):
        raise ValueError(f"{what} must be (N, 3) positive (t, h, w) patch grids, got {grid_thw!r}")
    return [tuple(int(x) for x in row) for row in g]


def _runs(ids: np.ndarray):
    """(value, start, length) of each run of equal tokens."""
    edges = np.flatnonzero(np.diff(ids)) + 1
    starts = np.concatenate([[0], edges])
    lengths = np.diff(np.concatenate([starts, [ids.shape[0]]]))
    return [(int(ids[s]), int(s), int(n)) for s, n in zip(starts, lengths)]


def _vision(kind, grid, merge):
    t, h, w = grid
    if h % merge or w % merge:
        raise ValueError(f"{kind} grid {grid} is not divisible by spatial_merge_size {merge}")
    if kind == "image":
        if t != 1:
            raise ValueError(f"image grid {grid} has t={t}; Qwen2-VL images have one temporal patch")
        return ("image", h // merge, w // merge), h * w // merge**2
    return ("video", t, h // merge, w // merge), t * h * w // merge**2


def segments_from_tokens(input_ids, image_grid_thw=None, video_grid_thw=None, *, image_token_id, video_token_id,
                         spatial_merge_size=2, attention_mask=None) -> list[tuple]:
    """One sample's token ids (L,) → `[("text", n), ("image", h, w), ("video", t, h, w), ...]`.

    Grids are in patches as the processor gives them (h, w before the merge); the segments are on the LLM
    grid. `attention_mask` (L,), when given, drops the padding first.
    """
    ids = np.asarray(input_ids)
    if ids.ndim == 2 and ids.shape[0] == 1:
        ids = ids.reshape(-1)
    if ids.ndim != 1 or ids.shape[0] == 0:
        raise ValueError(f"input_ids must be one non-empty sample (L,), got shape {ids.shape}")
    if attention_mask is not None:
        ids = ids[np.asarray(attention_mask).reshape(-1).astype(bool)]
    queues = {image_token_id: ("image", _grids(image_grid_thw, "image_grid_thw")),
              video_token_id: ("video", _grids(video_grid_thw, "video_grid_thw"))}
    used = {image_token_id: 0, video_token_id: 0}
    out = []
    for tok, _, n in _runs(ids):
        if tok not in queues:
            out.append(("text", n))
            continue
        kind, grids = queues[tok]
        while n > 0:  # a run may hold several back-to-back items
            if used[tok] >= len(grids):
                raise ValueError(f"more {kind} tokens than {kind}_grid_thw describes ({len(grids)} grid(s))")
            seg, count = _vision(kind, grids[used[tok]], spatial_merge_size)
            if count > n:
                raise ValueError(f"{kind} {used[tok]} with grid {grids[used[tok]]} needs {count} tokens, the run has "
                                 f"{n}")
            out.append(seg)
            used[tok] += 1
            n -= count
    for tok, (kind, grids) in queues.items():
        if used[tok] != len(grids):
            raise ValueError(f"{kind}_grid_thw has {len(grids)} grid(s) but the tokens hold {used[tok]} {kind}(s)")
    return out
