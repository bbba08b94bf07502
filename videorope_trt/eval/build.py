"""A trial's video: haystack frames with the needles (and distractors) inserted, encoded once and cached by the hash
of everything it is made of.

The video is written at the rate the model samples, so every frame of it is a frame the model sees, and every
inserted picture fills whole temporal slices (`temporal_patch_size` frames: Qwen2-VL's vision tower merges two
frames into one slice, and a needle sharing a slice with a haystack frame would be half a needle). A still needle is
its image held for one slice; a clip is its frames, the last repeated to fill its last slice. Insertion adds frames:
the haystack keeps all of its own, as in the V-NIAH code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from videorope_trt.artifact.atomic import atomic_file, write_atomic
from videorope_trt.eval.haystack import Haystack, haystack_frames
from videorope_trt.eval.trials import insertion_points

FORMAT = 1
#: one encoder thread and x264 without its assembly, as media/synthetic.py: the same inputs give the same bytes
ENCODER = {"libx264": {"crf": "16", "preset": "fast", "threads": "1", "x264-params": "asm=0"},
           "mpeg4": {"qscale": "2", "threads": "1"}}


@dataclass(frozen=True)
class BuiltVideo:
    path: str
    frames: int  # frames in the video (haystack + inserted)
    fps: float
    needles: tuple  # (start, end) frame range of each needle, in order
    distractors: tuple  # (start, end) frame range of each distractor
    key: str  # content hash: the cache key


def _padded(frames: np.ndarray, tp: int) -> np.ndarray:
    """Frames repeated at the end to fill whole temporal slices."""
    pad = -len(frames) % tp
    return np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)]) if pad else frames


def plan_segments(slices: int, tp: int, needle_at, needle_frames, distractor_at, distractor_frames: int) -> list:
    """[(kind, index, start, length)] in video order: kind "haystack" (index = first haystack frame), "needle" or
    "distractor". At one insertion point needles come before distractors."""
    segments, pos = [], 0
    for s in range(slices + 1):
        inserted = [("needle", i, n) for i, (at, n) in enumerate(zip(needle_at, needle_frames)) if at == s]
        inserted += [("distractor", j, distractor_frames) for j, at in enumerate(distractor_at) if at == s]
        for kind, index, length in inserted:
            segments.append((kind, index, pos, length))
            pos += length
        if s < slices:
            segments.append(("haystack", s * tp, pos, tp))
            pos += tp
    return segments


@dataclass(frozen=True)
class VideoSpec:
    """How trial videos are made: frame size (W, H), rate, temporal slice, haystack, encoder."""

    size: tuple
    fps: float
    temporal_patch_size: int
    haystack: Haystack
    codec: str


def _key(spec: VideoSpec, item, frames: int, needle_at, distractor_at, seed: int) -> str:
    parts = {"format": FORMAT, "size": list(spec.size), "fps": spec.fps, "tp": spec.temporal_patch_size,
             "codec": spec.codec, "encoder": ENCODER[spec.codec], "haystack": spec.haystack.identity(seed),
             "frames": frames, "needles": [p.digest for p in item.needles], "needle_at": list(needle_at),
             "distractor": item.distractor.digest if item.distractor is not None else None,
             "distractor_at": list(distractor_at)}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def build_video(out_dir, spec: VideoSpec, item, *, frames: int, depth: float, period: int | None,
                seed: int) -> BuiltVideo:
    """The video of one trial in `out_dir` (reused when already built): `frames` haystack frames, the item's needles
    at `depth`, its distractor every `period` haystack frames (None: no distractors)."""
    tp = spec.temporal_patch_size
    if frames % tp:
        raise ValueError(f"haystack length: received {frames} frames, expected a multiple of the model's temporal "
                         f"patch size {tp}")
    slices = frames // tp
    use_distractor = item.distractor is not None and period
    needle_at, distractor_at = insertion_points(slices, len(item.needles), depth,
                                                max(1, period // tp) if use_distractor else None)
    key = _key(spec, item, frames, needle_at, distractor_at, seed)
    out_dir = Path(out_dir)
    path, meta_path = out_dir / f"{key}.mp4", out_dir / f"{key}.json"
    if path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        return BuiltVideo(**{**meta, "path": str(path), "needles": tuple(map(tuple, meta["needles"])),
                             "distractors": tuple(map(tuple, meta["distractors"]))})
    needles = [_padded(p.frames, tp) for p in item.needles]
    distractor = _padded(item.distractor.frames, tp) if use_distractor else None
    segments = plan_segments(slices, tp, needle_at, [len(n) for n in needles], distractor_at,
                             0 if distractor is None else len(distractor))
    pictures = {"needle": needles, "distractor": [distractor] * len(distractor_at)}
    hay = haystack_frames(spec.haystack, spec.size, spec.fps, seed)

    def frames_in_order():
        for kind, index, _, length in segments:
            yield from ([next(hay) for _ in range(length)] if kind == "haystack" else pictures[kind][index])

    total = _encode(path, frames_in_order(), spec)
    placed = {k: tuple((start, start + length) for kind, _, start, length in segments if kind == k)
              for k in ("needle", "distractor")}
    built = BuiltVideo(str(path), total, spec.fps, placed["needle"], placed["distractor"], key)
    write_atomic(meta_path, json.dumps({**asdict(built), "path": path.name}, indent=1))
    return built


def _encode(path: Path, frames, spec: VideoSpec) -> int:
    """Write RGB frames as an MP4 through a temporary name; the frame count."""
    import av

    count = 0
    with atomic_file(path) as tmp, av.open(str(tmp), "w", format="mp4") as out:
        stream = out.add_stream(spec.codec, rate=Fraction(spec.fps).limit_denominator(1001),
                                options=ENCODER[spec.codec])
        stream.width, stream.height, stream.pix_fmt = spec.size[0], spec.size[1], "yuv420p"
        for count, rgb in enumerate(frames, start=1):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = count - 1
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return count
