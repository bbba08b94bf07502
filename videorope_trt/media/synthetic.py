"""Synthetic test videos: moving colored shapes over a shifting gradient, with a frame counter.

The counter is a row of seven-segment digits drawn in white on a black box in the top-left corner, with plain
numpy (no fonts), thick enough to survive H.264; `read_counter` reads it back from a decoded frame, so a test
can tell exactly which source frame a sampled frame was. Everything is a function of the seed: the same seed
gives the same pixels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from videorope_trt.artifact.atomic import atomic_file, write_atomic

MAX_SIDE = 8192
MIN_DIGITS = 4
# Seven segments a..g of each digit (a top, b top right, c bottom right, d bottom, e bottom left, f top left, g mid).
DIGIT_SEGMENTS = {
    0: "abcdef", 1: "bc", 2: "abdeg", 3: "abcdg", 4: "bcfg",
    5: "acdfg", 6: "acdefg", 7: "abc", 8: "abcdefg", 9: "abcdfg",
}
# Encoders in order of preference, with the options that keep the counter sharp.
#: The same seed gives the same file: one encoder thread, and x264 without its assembly (its SIMD code made the
#: bytes of two encodes of the same frames differ now and then, single-threaded too; without it the encode is
#: slower, which synthetic clips can afford).
ENCODERS = {
    "libx264": {"options": {"crf": "12", "preset": "fast", "threads": "1", "x264-params": "asm=0"},
                "pix_fmt": "yuv420p"},
    "mpeg4": {"options": {"qscale": "2", "threads": "1"}, "pix_fmt": "yuv420p"},
}
CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}


@dataclass(frozen=True)
class CounterLayout:
    """Where the frame counter sits: digit cells of dh x dw pixels, strokes th thick, gap between digits."""

    digits: int
    dh: int
    dw: int
    th: int
    gap: int
    pad: int

    @classmethod
    def for_frame(cls, width: int, height: int, num_frames: int) -> "CounterLayout":
        dh = max(14, height // 6)
        layout = cls(max(MIN_DIGITS, len(str(max(num_frames - 1, 0)))), dh, dh // 2 + 2, max(2, dh // 7),
                     max(3, dh // 5), max(2, dh // 7))
        need_w, need_h = layout.box[3], layout.box[1]
        if need_w > width or need_h > height:
            raise ValueError(
                f"size: received {width}x{height}, expected at least {need_w}x{need_h} to fit a "
                f"{layout.digits}-digit frame counter"
            )
        return layout

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1) of the black box holding the counter."""
        return 0, self.dh + 2 * self.pad, 0, self.digits * (self.dw + self.gap) - self.gap + 2 * self.pad

    def segments(self) -> dict[str, tuple[tuple[int, int, int, int], tuple[int, int]]]:
        """Segment → ((y0, y1, x0, x1) rectangle in the digit cell, (y, x) point to read it at)."""
        dh, dw, th = self.dh, self.dw, self.th
        mid, c = dh // 2, dw // 2
        top, bottom = (th + mid) // 2, (mid + dh - th) // 2
        return {
            "a": ((0, th, 0, dw), (th // 2, c)),
            "g": ((mid - th // 2, mid - th // 2 + th, 0, dw), (mid, c)),
            "d": ((dh - th, dh, 0, dw), (dh - 1 - th // 2, c)),
            "f": ((0, mid, 0, th), (top, th // 2)),
            "b": ((0, mid, dw - th, dw), (top, dw - 1 - th // 2)),
            "e": ((mid, dh, 0, th), (bottom, th // 2)),
            "c": ((mid, dh, dw - th, dw), (bottom, dw - 1 - th // 2)),
        }

    def origin(self, i: int) -> tuple[int, int]:
        return self.pad, self.pad + i * (self.dw + self.gap)


def draw_counter(frame: np.ndarray, value: int, layout: CounterLayout) -> None:
    """Draw `value` in place (zero padded to layout.digits)."""
    y0, y1, x0, x1 = layout.box
    frame[y0:y1, x0:x1] = 0
    segments = layout.segments()
    for i, ch in enumerate(str(value).zfill(layout.digits)):
        oy, ox = layout.origin(i)
        for name in DIGIT_SEGMENTS[int(ch)]:
            (a, b, c, d), _ = segments[name]
            frame[oy + a:oy + b, ox + c:ox + d] = 255


def read_counter(frame: np.ndarray, layout: CounterLayout) -> int:
    """Read the counter from a decoded (H, W, 3) uint8 frame; ValueError if a digit is unreadable."""
    lit = {name: ch for ch, name in ((ch, "".join(sorted(s))) for ch, s in DIGIT_SEGMENTS.items())}
    value = 0
    for i in range(layout.digits):
        oy, ox = layout.origin(i)
        on = "".join(sorted(n for n, (_, (y, x)) in layout.segments().items() if frame[oy + y, ox + x].mean() > 127))
        if on not in lit:
            raise ValueError(f"counter digit {i}: lit segments {on!r} match no digit")
        value = value * 10 + lit[on]
    return value


def _shapes(rng: np.random.Generator, width: int, height: int, count: int = 4) -> list[dict]:
    size = min(width, height)
    return [{
        "circle": bool(rng.integers(2)),
        "r": float(rng.uniform(0.08, 0.2) * size),
        "color": rng.integers(40, 256, 3).astype(np.uint8),
        "p0": rng.uniform(0, 1, 2) * (width, height),
        "v": rng.uniform(-0.5, 0.5, 2) * (width, height),  # pixels per second
    } for _ in range(count)]


def _bounce(x: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Position of a point moving freely, reflected off the walls 0 and hi (a triangle wave)."""
    x = np.mod(x, 2 * hi)
    return np.where(x > hi, 2 * hi - x, x)


def synthetic_frames(*, seconds: float, fps: float, width: int, height: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Yield the (height, width, 3) uint8 frames of the synthetic video, one at a time."""
    num_frames = _check(seconds, fps, width, height)
    rng = np.random.default_rng(seed)
    layout = CounterLayout.for_frame(width, height, num_frames)
    c0, c1 = rng.integers(0, 160, 3), rng.integers(0, 160, 3)
    shapes = _shapes(rng, width, height)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(num_frames):
        t = i / fps
        ramp = (np.sin(xx / width * np.pi + yy / height * np.pi + t) + 1) / 2  # slowly shifting gradient
        frame = (c0 + ramp[..., None] * (c1 - c0)).astype(np.uint8)
        for s in shapes:
            cx, cy = _bounce(s["p0"] + s["v"] * t, np.array([width, height], dtype=np.float64))
            if s["circle"]:
                mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= s["r"] ** 2
            else:
                mask = (np.abs(xx - cx) <= s["r"]) & (np.abs(yy - cy) <= s["r"] * 0.6)
            frame[mask] = s["color"]
        draw_counter(frame, i, layout)
        yield frame


def _check(seconds, fps, width, height) -> int:
    if not (0 < fps <= 240):
        raise ValueError(f"fps: received {fps}, expected 0 < fps <= 240")
    if not (0 < seconds <= 24 * 3600):
        raise ValueError(f"seconds: received {seconds}, expected 0 < seconds <= 86400")
    if not (16 <= width <= MAX_SIDE and 16 <= height <= MAX_SIDE) or width % 2 or height % 2:
        raise ValueError(
            f"size: received {width}x{height}, expected even sides in [16, {MAX_SIDE}] (4:2:0 video needs even sides)"
        )
    return max(1, round(seconds * fps))


def pick_encoder() -> str:
    """The first encoder of ENCODERS that this PyAV's FFmpeg provides."""
    import av

    for name in ENCODERS:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # PyAV raises UnknownCodecError (or ValueError in older releases)
            continue
    raise ValueError(f"none of the encoders {list(ENCODERS)} is available in this FFmpeg (PyAV {av.__version__})")


@dataclass(frozen=True)
class SyntheticVideo:
    path: str
    num_frames: int
    fps: float
    width: int
    height: int
    codec: str
    counter: CounterLayout


def make_synthetic_video(path, *, seconds: float, fps: float, width: int, height: int, seed: int = 0,
                         codec: str | None = None) -> SyntheticVideo:
    """Write the synthetic video (H.264 with libx264 when available, else MPEG-4 Part 2) and return its facts."""
    import av

    path = Path(path)
    num_frames = _check(seconds, fps, width, height)
    container_format = CONTAINERS.get(path.suffix.lower())
    if container_format is None:
        raise ValueError(f"{path}: received suffix {path.suffix!r}, expected one of {sorted(CONTAINERS)}")
    codec = codec or pick_encoder()
    if codec not in ENCODERS:
        raise ValueError(f"codec: received {codec!r}, expected one of {sorted(ENCODERS)}")
    layout = CounterLayout.for_frame(width, height, num_frames)  # fails before any file is created
    # the folder is made as every other writer makes it (FFmpeg's error would name no file)
    with atomic_file(path) as tmp, av.open(str(tmp), "w", format=container_format) as out:
        stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001), options=ENCODERS[codec]["options"])
        stream.width, stream.height, stream.pix_fmt = width, height, ENCODERS[codec]["pix_fmt"]
        for i, rgb in enumerate(synthetic_frames(seconds=seconds, fps=fps, width=width, height=height, seed=seed)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return SyntheticVideo(str(path), num_frames, float(fps), width, height, codec, layout)


def cut_short(src, out, fraction: float = 0.5) -> Path:
    """A copy of the MP4 `src` with its index moved to the front (faststart, as web and camera files are) and cut
    after `fraction` of its bytes: what a download stopped midway leaves. The container still declares every frame;
    only the first part of them can be decoded."""
    import av

    if not 0 < fraction < 1:
        raise ValueError(f"fraction: received {fraction}, expected a number in (0, 1)")
    out = Path(out)
    whole = out.with_name(f".{out.name}.{os.getpid()}.whole.mp4")
    try:
        with av.open(str(src)) as inp, av.open(str(whole), "w", options={"movflags": "faststart"}) as dst:
            stream = dst.add_stream_from_template(inp.streams.video[0])
            for packet in inp.demux(inp.streams.video[0]):
                if packet.dts is not None:  # the demuxer's final empty packet
                    packet.stream = stream
                    dst.mux(packet)
        data = whole.read_bytes()
    finally:
        whole.unlink(missing_ok=True)
    return write_atomic(out, data[: int(len(data) * fraction)])
