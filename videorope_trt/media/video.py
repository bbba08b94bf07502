"""Video in: decode with PyAV, sample frames, and preprocess them exactly as Qwen2-VL's processor does.

    file ──PyAV, lazily──▶ frames (RGB uint8, seconds) ──sample──▶ smart_resize (PIL bicubic, uint8)
         ──▶ rescale (×1/255, float64 → float32) ──▶ normalize ((x − mean) / std, float32)
         ──▶ pad to a multiple of temporal_patch_size (repeat the last frame) ──▶ patchify
    pixel_values (t·h·w, C·tp·p·p): rows ordered (t, h/m, w/m, m, m), columns (C, tp, p, p) — what
    Qwen2-VL's vision tower reads.

The numerics follow transformers' PIL/NumPy Qwen2-VL image processor (`Qwen2VLImageProcessorPil`) step by step.
Transformers' video processor runs the same steps through torchvision (resize antialias differs from PIL by a
grey level at most); this module uses the PIL path so it needs no torchvision.

Frames are decoded one at a time and only the sampled ones are kept, resized; `iter_video_chunks` keeps at most
one chunk, so a two-hour video is processed with flat memory.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from videorope_trt.media.video_io import VideoInfo, iter_frames, probe_video

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_SIDE = 16384  # larger resize targets are a configuration mistake, not a video
MAX_ASPECT = 200  # Qwen2-VL's limit: thinner frames cannot be cut into square patches sensibly


@dataclass(frozen=True)
class ProcessorConfig:
    """Qwen2-VL preprocessing settings. Defaults are those of transformers' Qwen2-VL video processor."""

    min_pixels: int = 128 * 28 * 28
    max_pixels: int = 768 * 28 * 28
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    image_mean: tuple = OPENAI_CLIP_MEAN
    image_std: tuple = OPENAI_CLIP_STD
    rescale_factor: float = 1 / 255
    min_frames: int = 4  # fps sampling never takes fewer frames than this (when the video has them)

    def __post_init__(self):
        for name in ("min_pixels", "max_pixels", "patch_size", "temporal_patch_size", "merge_size", "min_frames"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ProcessorConfig.{name}: received {getattr(self, name)}, expected an integer >= 1")
        if self.min_pixels > self.max_pixels:
            raise ValueError(
                f"ProcessorConfig: received min_pixels={self.min_pixels} > max_pixels={self.max_pixels}, "
                "expected min_pixels <= max_pixels"
            )
        if self.max_pixels > MAX_SIDE * MAX_SIDE:
            raise ValueError(
                f"ProcessorConfig.max_pixels: received {self.max_pixels}, expected at most {MAX_SIDE}x{MAX_SIDE}"
            )
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            raise ValueError(
                f"ProcessorConfig: received image_mean={self.image_mean}, image_std={self.image_std}; "
                "expected 3 values each, std > 0"
            )
        object.__setattr__(self, "image_mean", tuple(float(v) for v in self.image_mean))
        object.__setattr__(self, "image_std", tuple(float(v) for v in self.image_std))

    @property
    def factor(self) -> int:
        """Resized sides are multiples of this: one merged token covers factor x factor pixels."""
        return self.patch_size * self.merge_size

    @classmethod
    def from_checkpoint(cls, ckpt_dir) -> "ProcessorConfig":
        """Read `video_preprocessor_config.json` (if present) else `preprocessor_config.json`."""
        ckpt = Path(ckpt_dir)
        path = next((p for p in (ckpt / "video_preprocessor_config.json", ckpt / "preprocessor_config.json")
                     if p.is_file()), None)
        if path is None:
            raise FileNotFoundError(f"{ckpt}: no preprocessor_config.json (expected a Qwen2-VL checkpoint directory)")
        raw = json.loads(path.read_text())
        size = raw.get("size") or {}
        fields = {
            "min_pixels": raw.get("min_pixels", size.get("shortest_edge")),
            "max_pixels": raw.get("max_pixels", size.get("longest_edge")),
            **{k: raw.get(k) for k in ("patch_size", "temporal_patch_size", "merge_size", "image_mean",
                                       "image_std", "rescale_factor", "min_frames")},
        }
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in fields.items() if v is not None})

    def target_size(self, height: int, width: int, max_pixels: int | None = None) -> tuple[int, int]:
        """Qwen2-VL's smart_resize: sides multiples of `factor`, area within [min_pixels, max_pixels],
        aspect ratio kept as well as rounding allows."""
        max_pixels = self.max_pixels if max_pixels is None else max_pixels
        if min(height, width) < 1 or max(height, width) / min(height, width) > MAX_ASPECT:
            raise ValueError(
                f"frame size: received {width}x{height}, expected sides >= 1 and aspect ratio <= {MAX_ASPECT}"
            )
        f = self.factor
        h, w = round(height / f) * f, round(width / f) * f
        if h * w > max_pixels:
            beta = math.sqrt(height * width / max_pixels)
            h, w = max(f, math.floor(height / beta / f) * f), max(f, math.floor(width / beta / f) * f)
        elif h * w < self.min_pixels:
            beta = math.sqrt(self.min_pixels / (height * width))
            h, w = math.ceil(height * beta / f) * f, math.ceil(width * beta / f) * f
        if max(h, w) > MAX_SIDE:
            raise ValueError(f"resize target {w}x{h} for a {width}x{height} frame: expected sides <= {MAX_SIDE}")
        return h, w

    def tokens_per_slice(self, height: int, width: int) -> int:
        """Visual tokens (after the merge) of one temporal slice of resized size height x width."""
        return (height // self.factor) * (width // self.factor)


@dataclass(frozen=True)
class VideoInput:
    """Sampled, preprocessed frames of one video (or one chunk of it)."""

    pixel_values: np.ndarray  # (t·h·w, C·tp·p·p) float32
    grid_thw: np.ndarray  # (3,) int64: temporal slices, patch rows, patch columns (before the merge)
    timestamps: np.ndarray  # (frames,) float64: seconds of each sampled frame (padding excluded)
    frame_indices: np.ndarray  # (frames,) int64: index of each sampled frame in the decoded range
    fps: float  # rate at which frames were actually sampled
    second_per_grid_t: float  # temporal_patch_size / fps: seconds covered by one temporal slice
    #: why fewer frames than planned were read (a cut or damaged file, accepted with allow_truncated); "" if none
    truncated: str = ""

    @property
    def num_tokens(self) -> int:
        """Visual tokens after the 2x2 (merge_size²) merge, given merge_size 2."""
        t, h, w = (int(v) for v in self.grid_thw)
        return t * (h // 2) * (w // 2)

    def slice_times(self, temporal_patch_size: int = 2) -> np.ndarray:
        """(t,) seconds of each temporal slice: mean of its first and last frame (padding repeats the last)."""
        ts = self.timestamps
        pad = -len(ts) % temporal_patch_size
        ts = np.concatenate([ts, np.repeat(ts[-1:], pad)]).reshape(-1, temporal_patch_size)
        return (ts[:, 0] + ts[:, -1]) / 2


DEFAULT_PROCESSOR = ProcessorConfig()


def sample_indices(total: int, source_fps: float, *, fps: float | None, max_frames: int | None = None,
                   min_frames: int = 4, temporal_patch_size: int = 2) -> np.ndarray:
    """Indices of the frames to keep out of `total`, by Qwen2-VL's video processor rule.

    count = total / source_fps · fps, clamped to [min_frames, min(max_frames, total)], floored to a multiple of
    temporal_patch_size; fps None keeps every frame (up to max_frames). Index k is floor(k · total / count),
    computed in integers: transformers' float32 `arange` can drift by one frame or return count + 1 indices.
    """
    if total < 1:
        raise ValueError(f"video has {total} frames in the requested range, expected at least 1")
    cap = min(total, max_frames if max_frames is not None else total)
    count = total if fps is None else min(max(total / source_fps * fps, min_frames), cap)
    count = min(count, cap)
    count = math.floor(count / temporal_patch_size) * temporal_patch_size
    if count == 0:  # shorter than one temporal slice: keep what there is, padding fills the slice
        count = min(cap, temporal_patch_size)
    return (np.arange(count, dtype=np.int64) * total) // count


def preprocess_frames(frames: np.ndarray, processor: ProcessorConfig = DEFAULT_PROCESSOR) -> tuple:
    """(T, H, W, 3) uint8 frames already resized to multiples of `factor` → (pixel_values, grid_thw)."""
    cfg = processor
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames: received {frames.dtype} {frames.shape}, expected uint8 (T>=1, H, W, 3)")
    t, height, width, channels = frames.shape
    if height % cfg.factor or width % cfg.factor:
        raise ValueError(f"frames: received {width}x{height}, expected sides that are multiples of {cfg.factor}")
    x = (frames.astype(np.float64) * cfg.rescale_factor).astype(np.float32)  # as transformers' rescale
    x = (x - np.asarray(cfg.image_mean, np.float32)) / np.asarray(cfg.image_std, np.float32)
    tp, p, m = cfg.temporal_patch_size, cfg.patch_size, cfg.merge_size
    if pad := -t % tp:  # Qwen2-VL repeats the last frame to fill the last temporal slice
        x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
    gt, gh, gw = len(x) // tp, height // p, width // p
    x = x.reshape(gt, tp, gh // m, m, p, gw // m, m, p, channels)
    # (gt, tp, bh, mh, ph, bw, mw, pw, C) → (gt, bh, bw, mh, mw, C, tp, ph, pw)
    x = x.transpose(0, 2, 5, 3, 6, 8, 1, 4, 7)
    pixel_values = np.ascontiguousarray(x.reshape(gt * gh * gw, channels * tp * p * p))
    return pixel_values, np.array([gt, gh, gw], dtype=np.int64)


def resize_frame(frame, size: tuple[int, int]) -> np.ndarray:
    """PIL image or (H, W, 3) uint8 → (h, w, 3) uint8, bicubic, as transformers' PIL backend resizes."""
    from PIL import Image

    image = frame if isinstance(frame, Image.Image) else Image.fromarray(np.asarray(frame, np.uint8))
    height, width = size
    return np.asarray(image.convert("RGB").resize((width, height), resample=Image.Resampling.BICUBIC))


@dataclass(frozen=True)
class _Plan:
    start: float
    end: float
    indices: np.ndarray
    size: tuple[int, int]  # resized (height, width)
    fps: float
    total: int = 0  # frames the container declares in the range
    whole: bool = True  # the whole video (its frame count is the container's), not a time range of it


class TruncatedVideo(ValueError):
    """The video ended, or its decoder failed, before every planned frame was read: a cut or damaged file.
    `facts`: what was declared and what was read."""

    def __init__(self, facts: str):
        super().__init__(f"{facts}. Fix or re-download the file, or accept an answer from those frames "
                         "(--allow-truncated-video; load_video(..., allow_truncated=True))")
        self.facts = facts


def _check_range(info: VideoInfo, start, end) -> tuple[float, float]:
    t0 = 0.0 if start is None else float(start)
    t1 = info.duration if end is None else min(float(end), info.duration)
    if not (0 <= t0 < info.duration) or not math.isfinite(t0):
        raise ValueError(f"start: received {start}, expected 0 <= start < duration ({info.duration:.3f} s)")
    if end is not None and not float(end) > t0:
        raise ValueError(f"time range: received start={t0} end={end}, expected end > start")
    return t0, t1


def _fit_budget(info: VideoInfo, plan: _Plan, cfg: ProcessorConfig, token_budget: int, total: int,
                sampling: dict) -> _Plan:
    """Lower the frame resolution first (down to min_pixels), then the frame count, to fit the budget."""
    if int(token_budget) < 1:
        raise ValueError(f"token_budget: received {token_budget}, expected an integer >= 1")
    tp, f2 = cfg.temporal_patch_size, cfg.factor ** 2
    slices = math.ceil(len(plan.indices) / tp)
    per_frame = max(cfg.min_pixels, min(cfg.max_pixels, token_budget * f2 // slices))
    size = cfg.target_size(info.height, info.width, max_pixels=per_frame)
    per_slice = cfg.tokens_per_slice(*size)
    if per_slice > token_budget:
        raise ValueError(
            f"token_budget: received {token_budget}, expected at least {per_slice} (one temporal slice of "
            f"{size[1]}x{size[0]} at min_pixels={cfg.min_pixels})"
        )
    indices = plan.indices
    if slices * per_slice > token_budget:
        indices = sample_indices(total, info.fps, **{**sampling, "max_frames": token_budget // per_slice * tp})
    return _Plan(plan.start, plan.end, indices, size, plan.fps * len(indices) / len(plan.indices), total, plan.whole)


def plan_sampling(info: VideoInfo, processor: ProcessorConfig = DEFAULT_PROCESSOR, *, fps=2.0, max_frames=None,
                  start=None, end=None, token_budget=None) -> _Plan:
    """Which frames to decode and the size to resize them to, from the container's metadata alone."""
    cfg = processor
    if fps is not None and not (0 < fps <= 1000):
        raise ValueError(f"fps: received {fps}, expected 0 < fps <= 1000 or None (every frame)")
    if max_frames is not None and int(max_frames) < 1:
        raise ValueError(f"max_frames: received {max_frames}, expected an integer >= 1 or None")
    t0, t1 = _check_range(info, start, end)
    whole = start is None and end is None and info.num_frames > 0
    total = info.num_frames if whole else max(1, round((t1 - t0) * info.fps))
    sampling = dict(fps=fps, max_frames=max_frames, min_frames=cfg.min_frames,
                    temporal_patch_size=cfg.temporal_patch_size)
    indices = sample_indices(total, info.fps, **sampling)
    plan = _Plan(t0, t1, indices, cfg.target_size(info.height, info.width), info.fps * len(indices) / total, total,
                 whole)
    return plan if token_budget is None else _fit_budget(info, plan, cfg, token_budget, total, sampling)


def _as_processor(processor) -> ProcessorConfig:
    return processor if isinstance(processor, ProcessorConfig) else ProcessorConfig.from_checkpoint(processor)


def _sampled_frames(path, plan: _Plan) -> Iterator[tuple[int, float, np.ndarray]]:
    """(range index, seconds, resized uint8 frame) for the planned frames, decoding lazily. TruncatedVideo when the
    file ends, or its decoder fails, before the last planned frame."""
    wanted = iter(plan.indices.tolist())
    target, decoded, seconds = next(wanted, None), 0, plan.start
    frames = iter_frames(path, plan.start, plan.end)
    while target is not None:
        try:
            seconds, frame = next(frames)
        except StopIteration:
            break
        except ValueError as e:  # the decoder failed: what came before it is all there is
            if decoded == 0:
                raise
            _cut_short(path, plan, decoded, seconds, f"its decoder failed after {decoded} frames ({e})")
        if decoded == target:
            yield decoded, seconds, resize_frame(frame.to_image(), plan.size)
            target = next(wanted, None)
        decoded += 1
    if target is not None and (plan.whole or decoded < plan.total - 1):  # a range's count may round up by one
        _cut_short(path, plan, decoded, seconds, f"it ended after {decoded} frames")


def _cut_short(path, plan: _Plan, decoded: int, seconds: float, how: str):
    read = int(np.searchsorted(plan.indices, decoded))
    raise TruncatedVideo(
        f"{path}: the container declares {plan.total} frames ({plan.end - plan.start:.2f} s) but {how}, at "
        f"{seconds:.2f} s; the file looks cut short or damaged, and only {read} of the {len(plan.indices)} planned "
        "frames were read")


def _read_frames(path, plan: _Plan, allow_truncated: bool) -> tuple:
    """(rows of `_sampled_frames`, why fewer than planned were read or "")."""
    rows = []
    try:
        for row in _sampled_frames(path, plan):
            rows.append(row)
    except TruncatedVideo as e:
        if not allow_truncated or not rows:
            raise
        return rows, e.facts
    return rows, ""


def _video_input(frames, times, indices, plan: _Plan, cfg: ProcessorConfig, truncated: str = "") -> VideoInput:
    pixel_values, grid = preprocess_frames(np.stack(frames), cfg)
    return VideoInput(pixel_values, grid, np.asarray(times, np.float64), np.asarray(indices, np.int64),
                      plan.fps, cfg.temporal_patch_size / plan.fps, truncated)


def load_video(path, *, fps: float | None = 2.0, max_frames: int | None = None, start: float | None = None,
               end: float | None = None, token_budget: int | None = None,
               processor: ProcessorConfig | str | Path = DEFAULT_PROCESSOR,
               allow_truncated: bool = False) -> VideoInput:
    """Decode, sample and preprocess a video for Qwen2-VL.

    fps: frames per second to sample (None: every frame); max_frames: at most this many frames;
    start/end: seconds (end past the video is clamped); token_budget: at most this many visual tokens after the
    merge (resolution is lowered first, down to min_pixels, then frames are dropped); processor: settings or a
    checkpoint directory. Every check that can fail runs before any frame is decoded, but one: a file that ends (or
    fails to decode) before its last planned frame raises TruncatedVideo, naming the frames its container declares
    and those read, unless `allow_truncated`, which keeps the frames read and says so in `VideoInput.truncated`.
    """
    cfg = _as_processor(processor)
    plan = plan_sampling(probe_video(path), cfg, fps=fps, max_frames=max_frames, start=start, end=end,
                         token_budget=token_budget)
    rows, truncated = _read_frames(path, plan, allow_truncated)
    if not rows:
        raise ValueError(f"{path}: no frame decoded in [{plan.start:.3f}, {plan.end:.3f}) s, expected at least one")
    indices, times, frames = zip(*rows)
    return _video_input(frames, times, indices, plan, cfg, truncated)


def iter_video_chunks(path, frames_per_chunk: int, *, fps: float | None = 2.0, start: float | None = None,
                      end: float | None = None,
                      processor: ProcessorConfig | str | Path = DEFAULT_PROCESSOR) -> Iterator[VideoInput]:
    """Yield the sampled video in chunks of `frames_per_chunk` frames (the last one padded like any video),
    holding at most one chunk of frames in memory. All chunks share one resize target and one sampling rate."""
    cfg = _as_processor(processor)
    if int(frames_per_chunk) < 1 or frames_per_chunk % cfg.temporal_patch_size:
        raise ValueError(
            f"frames_per_chunk: received {frames_per_chunk}, expected a positive multiple of "
            f"temporal_patch_size ({cfg.temporal_patch_size})"
        )
    plan = plan_sampling(probe_video(path), cfg, fps=fps, start=start, end=end)
    rows, seen = [], False
    for row in _sampled_frames(path, plan):
        rows.append(row)
        if len(rows) == frames_per_chunk:
            seen = True
            yield _chunk(rows, plan, cfg)
            rows = []
    if rows:
        yield _chunk(rows, plan, cfg)
    elif not seen:
        raise ValueError(f"{path}: no frame decoded in [{plan.start:.3f}, {plan.end:.3f}) s, expected at least one")


def _chunk(rows, plan: _Plan, cfg: ProcessorConfig) -> VideoInput:
    indices, times, frames = zip(*rows)
    return _video_input(frames, times, indices, plan, cfg)
