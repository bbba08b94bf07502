"""Reading video files with PyAV (FFmpeg): metadata without decoding, and frames one at a time.

Any container/codec the installed FFmpeg reads works. Times are seconds from the start of the video stream.
Every FFmpeg failure becomes a ValueError naming the file and what was expected.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

MAX_FRAME_SIDE = 16384  # beyond any real codec level: a corrupt header, not a video
_EPS = 1e-6


@dataclass(frozen=True)
class VideoInfo:
    path: str
    width: int
    height: int
    fps: float  # average frame rate of the stream
    duration: float  # seconds
    num_frames: int  # frames in the stream (from the container, else counted from packets)
    codec: str


@contextlib.contextmanager
def _open(path):
    import av

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    try:
        container = av.open(str(path))
    except av.FFmpegError as e:
        raise ValueError(f"{path}: cannot be read as a video ({e}); expected a file FFmpeg can decode") from e
    try:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise ValueError(f"{path}: no video stream (streams: {', '.join(kinds)}), expected one")
        yield container, container.streams.video[0]
    except av.FFmpegError as e:
        raise ValueError(f"{path}: decoding failed ({e}); expected a readable video stream") from e
    finally:
        container.close()


def _stream_start(stream) -> float:
    return float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0


def probe_video(path) -> VideoInfo:
    """Size, frame rate, duration and frame count from the container; decodes nothing (may demux packets)."""
    with _open(path) as (container, stream):
        ctx = stream.codec_context
        width, height = int(ctx.width or 0), int(ctx.height or 0)
        if not (1 <= width <= MAX_FRAME_SIDE and 1 <= height <= MAX_FRAME_SIDE):
            raise ValueError(f"{path}: frame size {width}x{height}, expected sides in [1, {MAX_FRAME_SIDE}]")
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        frames = int(stream.frames or 0)
        if stream.duration:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / 1e6  # microseconds (FFmpeg's AV_TIME_BASE)
        else:
            duration = 0.0
        if frames <= 0:  # not in the header: count packets (cheap, nothing is decoded)
            frames = sum(1 for p in container.demux(stream) if p.size)
        fps = float(rate) if rate else (frames / duration if duration > 0 else 0.0)
        if duration <= 0 and fps > 0:
            duration = frames / fps
        codec = ctx.name
    if frames <= 0 or fps <= 0 or duration <= 0:
        raise ValueError(
            f"{path}: received {frames} frames, {fps:.3f} fps, {duration:.3f} s; expected a video with frames"
        )
    return VideoInfo(str(path), width, height, fps, duration, frames, codec)


def iter_frames(path, start: float = 0.0, end: float | None = None) -> Iterator[tuple[float, object]]:
    """Yield (seconds, av.VideoFrame) for frames with start <= seconds < end, in presentation order, lazily."""
    with _open(path) as (container, stream):
        stream.thread_type = "AUTO"
        origin = _stream_start(stream)
        if start > 0:  # land on the keyframe at or before start, then skip forward
            container.seek(int((start + origin) / stream.time_base), stream=stream, backward=True)
        fallback = 1.0 / float(stream.average_rate or 25)
        last = None
        for frame in container.decode(stream):
            seconds = frame.time - origin if frame.time is not None else (last + fallback if last is not None else 0)
            last = seconds
            if seconds < start - _EPS:
                continue
            if end is not None and seconds >= end - _EPS:
                return
            yield seconds, frame


def frames_at_fps(path, fps: float) -> Iterator[np.ndarray]:
    """RGB frames of a video at `fps`: sample time k / fps shows the last frame shown at or before it."""
    step, next_time, held, held_rgb, last = 1.0 / fps, 0.0, None, None, 0.0
    for seconds, frame in iter_frames(path):
        while held is not None and next_time < seconds - _EPS:
            held_rgb = held.to_ndarray(format="rgb24") if held_rgb is None else held_rgb
            yield held_rgb
            next_time += step
        held, held_rgb, last = frame, None, seconds
    if held is not None and next_time <= last + _EPS:
        yield held.to_ndarray(format="rgb24")
