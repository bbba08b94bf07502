"""The inputs `validate` feeds every backend: a prompt laid out as text, a real generated video and an image, through
the real preprocessing, and the decoder feeds of prefill and each decode step with PyTorch's outputs.

    layout "text:12,video,text:4,image,text:8"  →  input_ids (B, L) left padded (row b has 3·b fewer text tokens)
    video: synthetic MP4 (runtime.synthetic) → load_video (Qwen2-VL preprocessing) → pixels, grid (t, h, w)
    image: the first synthetic frame → the processor's resize → preprocess_frames → pixels, grid (1, h, w)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from videorope_trt.artifact.specs import cache_names, cache_out_names

LAYOUT_PARTS = ("text:N", "video", "image")


@dataclass(frozen=True)
class Media:
    kind: str  # "video" or "image"
    pixels: np.ndarray  # (N, C*tp*p*p) float32
    grid: np.ndarray  # (3,) t, h, w in patches
    tokens: int


@dataclass(frozen=True)
class Prompt:
    ids: object  # torch (B, L) int64, left padded
    mask: object  # torch (B, L) int64
    media: dict  # kind → Media (one clip and one image, repeated wherever the layout names them)
    fps: float  # the video's sampled fps (positions of time-aware variants)


def parse_media_layout(layout: str) -> list:
    """"text:12,video,image" → [("text", 12), ("video",), ("image",)]; errors name the bad part."""
    parts = []
    for part in layout.split(","):
        kind, _, n = part.strip().partition(":")
        if kind == "text" and n.isdigit() and int(n) >= 1:
            parts.append(("text", int(n)))
        elif kind in ("video", "image") and not n:
            parts.append((kind,))
        else:
            raise ValueError(f"layout part {part!r}: expected one of {', '.join(LAYOUT_PARTS)} (N >= 1)")
    return parts


def make_media(processor_dir, work: Path, *, seconds: float, frame_size: tuple, sample_fps: float, seed: int) -> tuple:
    """({"video": Media, "image": Media}, sampled fps) from one generated clip."""
    from videorope_trt.media.synthetic import make_synthetic_video, synthetic_frames
    from videorope_trt.media.video import ProcessorConfig, load_video, preprocess_frames, resize_frame

    width, height = frame_size
    clip = work / "clip.mp4"
    make_synthetic_video(clip, seconds=seconds, fps=max(4.0, 2 * sample_fps), width=width, height=height, seed=seed)
    vin = load_video(clip, fps=sample_fps, processor=processor_dir)
    cfg = ProcessorConfig.from_checkpoint(processor_dir)
    frame = next(iter(synthetic_frames(seconds=1.0, fps=1.0, width=width, height=height, seed=seed + 1)))
    pixels, grid = preprocess_frames(resize_frame(frame, cfg.target_size(height, width))[None], cfg)
    merge2 = cfg.merge_size**2
    media = {"video": Media("video", vin.pixel_values, np.asarray(vin.grid_thw), int(vin.num_tokens)),
             "image": Media("image", pixels, grid, int(np.prod(grid)) // merge2)}
    return media, float(vin.fps)


def build_prompt(config, layout: str, batch: int, media: dict, fps: float, seed: int) -> Prompt:
    """Token ids of `layout` for `batch` rows (shorter rows are left padded)."""
    import torch

    c = config
    specials = (c.image_token_id, c.video_token_id, c.vision_start_token_id, c.vision_end_token_id)
    pad = {"video": c.video_token_id, "image": c.image_token_id}
    rng = np.random.default_rng(seed)
    rows = []
    for b in range(batch):
        ids = []
        for part in parse_media_layout(layout):
            if part[0] == "text":
                ids += rng.integers(3, min(specials), max(1, part[1] - 3 * b)).tolist()
            else:
                ids += [c.vision_start_token_id] + [pad[part[0]]] * media[part[0]].tokens + [c.vision_end_token_id]
        rows.append(ids)
    length = max(len(r) for r in rows)
    ids = torch.zeros(batch, length, dtype=torch.int64)
    mask = torch.zeros_like(ids)
    for b, r in enumerate(rows):
        ids[b, length - len(r):], mask[b, length - len(r):] = torch.tensor(r), 1
    return Prompt(ids, mask, media, fps)


def _grids(prompt: Prompt, layout: str, kind: str):
    """Pixels and grids of every `kind` part of every row, in token order (as the model's embed expects)."""
    import torch

    n = sum(1 for p in parse_media_layout(layout) if p[0] == kind) * prompt.ids.shape[0]
    if n == 0:
        return None, None
    m = prompt.media[kind]
    return torch.from_numpy(np.concatenate([m.pixels] * n)), torch.from_numpy(np.stack([m.grid] * n))


def decoder_steps(model, prompt: Prompt, layout: str, decode_steps: int, last_only: bool) -> list:
    """[(feeds, torch outputs)] for prefill and each greedy decode step (teacher forcing from torch), over caches of
    the prompt + steps rows written in place as the runtime does (each step's caches are torch's of the step before)."""
    import torch

    from videorope_trt import rope
    from videorope_trt.export.decoder import DecoderGraph

    graph = DecoderGraph(model, last_only=last_only).eval()
    layers = len(model.text_model.layers)
    ids, mask = prompt.ids, prompt.mask
    img_px, img_grid = _grids(prompt, layout, "image")
    vid_px, vid_grid = _grids(prompt, layout, "video")
    names = ["logits"] + [n for i in range(layers) for n in cache_out_names(i)]
    batch, length = ids.shape
    with torch.no_grad():
        embeds = model.embed(ids, pixel_values=img_px, image_grid_thw=img_grid, pixel_values_videos=vid_px,
                             video_grid_thw=vid_grid)
        bp = model.positions(ids, img_grid, vid_grid, mask, fps=prompt.fps)
        shape = (batch, model.text_model.config.num_key_value_heads, length + decode_steps, model.rope.head_dim)
        caches = [np.zeros(shape, np.float32)] * (2 * layers)
        feeds = {"inputs_embeds": embeds.numpy(), "positions": bp.positions.astype(np.float32),
                 "attention_mask": mask.numpy(), "write_offset": np.zeros(batch, np.int32)}
        steps, cache_pos = [], length
        for _ in range(decode_steps + 1):
            for i in range(layers):
                feeds[cache_names(i)[0]], feeds[cache_names(i)[1]] = caches[2 * i], caches[2 * i + 1]
            outs = graph(*[torch.from_numpy(v) for v in feeds.values()])
            result = {n: o.numpy() for n, o in zip(names, outs)}
            steps.append((dict(feeds), result))
            token = torch.from_numpy(result["logits"][:, -1].argmax(-1))
            caches = [result[n] for n in names[1:]]
            feeds = {"inputs_embeds": model.text_model.embed_tokens(token)[:, None].numpy(),
                     "positions": rope.decode_positions(model.rope.variant, bp.rope_deltas,
                                                        np.array([cache_pos])).astype(np.float32),
                     "attention_mask": np.concatenate([feeds["attention_mask"], np.ones((batch, 1), np.int64)], 1),
                     "write_offset": np.full(batch, cache_pos, np.int32)}
            cache_pos += 1
    return steps


def vision_chunks(media: Media, merge: int, slices_per_call: int) -> list:
    """Feeds of the vision graph for `media`, a few temporal slices per call (as the runtime splits a video)."""
    from videorope_trt.artifact.vision_inputs import slice_pos_ids, vision_calls

    h, w = (int(v) for v in media.grid[1:])
    return [{"pixel_values": media.pixels[c.start:c.stop], "slice_pos_ids": slice_pos_ids(h, w, merge)}
            for c in vision_calls(media.grid[None], merge, slices_per_call * h * w)]
