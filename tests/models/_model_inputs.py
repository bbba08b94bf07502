"""Prompt builders for the model tests: token ids with vision placeholders, random pixels of the right shape."""

import numpy as np
import torch

PATCH_DIM = 3 * 2 * 14 * 14  # channels * temporal_patch_size * patch_size**2


def build(cfg, parts, seed=0):
    """parts: ("text", [ids]) | ("image", (1, gh, gw)) | ("video", (t, gh, gw)), grids in patches.

    Returns (input_ids (1, L), inputs dict for embed/forward, layout segments on the merged grid).
    """
    gen = torch.Generator().manual_seed(seed)
    ids, segs = [], []
    pix = {"image": [], "video": []}
    grids = {"image": [], "video": []}
    for kind, value in parts:
        if kind == "text":
            ids += list(value)
            segs.append(("text", len(value)))
            continue
        t, gh, gw = value
        n = t * gh * gw // 4
        token = cfg.image_token_id if kind == "image" else cfg.video_token_id
        ids += [token] * n
        pix[kind].append(torch.randn(t * gh * gw, PATCH_DIM, generator=gen))
        grids[kind].append(value)
        segs.append(("image", gh // 2, gw // 2) if kind == "image" else ("video", t, gh // 2, gw // 2))
    inputs = {}
    if pix["image"]:
        inputs.update(pixel_values=torch.cat(pix["image"]), image_grid_thw=torch.tensor(grids["image"]))
    if pix["video"]:
        inputs.update(pixel_values_videos=torch.cat(pix["video"]), video_grid_thw=torch.tensor(grids["video"]))
    return torch.tensor([ids]), inputs, segs


def vision(cfg, body):
    """Wrap a vision part in <|vision_start|> ... <|vision_end|> text tokens."""
    return [("text", [cfg.vision_start_token_id]), body, ("text", [cfg.vision_end_token_id])]


def image_video_prompt(cfg):
    """text, an image (2x2 merged tokens), text, a video of 2 slices on a 2x3 merged grid, text."""
    return ([("text", [5, 6, 7])] + vision(cfg, ("image", (1, 4, 4))) + [("text", [8, 9])]
            + vision(cfg, ("video", (2, 4, 6))) + [("text", [10, 11, 12, 13])])


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


def mm_token_type_ids(cfg, ids):
    return (ids == cfg.image_token_id).int() + 2 * (ids == cfg.video_token_id).int()


def np_positions(x):
    return torch.as_tensor(np.asarray(x), dtype=torch.float32)
