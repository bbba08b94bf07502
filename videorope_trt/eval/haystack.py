"""Haystacks: the frames a needle hides in, sampled at the model's rate from a video file, a folder of videos (in
name order, one after another) or a generated scene, looping when the videos are shorter than the haystack (as the
V-NIAH code repeats its haystack)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from videorope_trt.eval.pictures import fit
from videorope_trt.media.video_io import frames_at_fps

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts"}


@dataclass(frozen=True)
class Haystack:
    """Where haystack frames come from: video files in order, or none for the generated scene."""

    paths: tuple = ()

    @property
    def generated(self) -> bool:
        return not self.paths

    def identity(self, seed: int) -> dict:
        """What the frames depend on, for the cache key of a built video: the files' names, sizes and times, or the
        generated scene's seed."""
        if self.generated:
            return {"generated": int(seed)}
        return {"files": [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in map(Path, self.paths)]}

    def describe(self) -> str:
        if self.generated:
            return "generated"
        return self.paths[0] if len(self.paths) == 1 else f"{Path(self.paths[0]).parent} ({len(self.paths)} videos)"


def open_haystack(source=None) -> Haystack:
    """A video file, a folder of videos, or None / "generated" for the generated scene."""
    if source in (None, "", "generated"):
        return Haystack()
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
        if not files:
            raise FileNotFoundError(f"haystack folder {path} holds no video ({', '.join(sorted(VIDEO_SUFFIXES))})")
        return Haystack(tuple(str(p.resolve()) for p in files))
    if not path.is_file():
        raise FileNotFoundError(f"haystack {path}: no such file or folder; expected a video, a folder of videos or "
                                "'generated'")
    return Haystack((str(path.resolve()),))


def generated_frames(size: tuple, seed: int) -> Iterator[np.ndarray]:
    """An endless, slowly changing scene: soft colored blobs drifting over a dim gradient; no text, no digits, and
    no pixel brighter than 200 (drawn needles have a lighter ground)."""
    width, height = size
    rng = np.random.default_rng([int(seed), 7])
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(30, 110, 3).astype(np.float32)
    blobs = [(rng.uniform(0, 1, 2) * (width, height), rng.uniform(-3, 3, 2), rng.uniform(0.15, 0.35) * min(size),
              rng.uniform(20, 90, 3)) for _ in range(5)]
    for k in itertools.count():
        frame = base + 25 * np.sin(xx / width * 3 + yy / height * 2 + k * 0.05)[..., None]
        for p0, v, r, color in blobs:
            cx, cy = np.mod(p0 + v * k, (width, height))
            frame = frame + color * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None]
        yield np.clip(frame, 0, 200).astype(np.uint8)


def haystack_frames(haystack: Haystack, size: tuple, fps: float, seed: int = 0) -> Iterator[np.ndarray]:
    """Endless (H, W, 3) uint8 frames at `fps`, fitted to size (W, H)."""
    if haystack.generated:
        yield from generated_frames(size, seed)
        return
    while True:
        count = 0
        for path in haystack.paths:
            for frame in frames_at_fps(path, fps):
                count += 1
                yield fit(frame, size)
        if count == 0:
            raise ValueError(f"haystack {haystack.describe()}: no frames decoded; expected readable videos")
