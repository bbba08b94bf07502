"""Needle and distractor pictures: drawn (a colored shape carrying a digit, plain numpy, no fonts) or read from an
image or a short clip. A picture is one or more RGB frames at the haystack's frame size; a still image is one frame.

Drawn needles sit on a light grey background unlike any haystack frame, and their colors are saturated, so a test
can find them again in a decoded video by pixel statistics alone.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from videorope_trt.media.synthetic import DIGIT_SEGMENTS

#: named, saturated colors: the names go into the questions
COLORS = {
    "red": (225, 25, 25), "green": (20, 165, 50), "blue": (35, 65, 225), "yellow": (240, 205, 15),
    "purple": (135, 45, 185), "orange": (250, 125, 15), "cyan": (15, 190, 205), "pink": (240, 95, 170),
}
SHAPES = ("circle", "square", "triangle", "diamond")
BACKGROUND = 232  # grey level of a drawn picture's background
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


@dataclass(frozen=True, eq=False)
class Picture:
    """Frames of one needle or distractor, (n, H, W, 3) uint8."""

    name: str
    frames: np.ndarray

    @property
    def digest(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.frames).tobytes() + str(self.frames.shape).encode()).hexdigest()


def _shape_mask(shape: str, height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    cy, cx, r = (height - 1) / 2, (width - 1) / 2, 0.42 * min(height, width)
    dy, dx = (yy - cy) / r, (xx - cx) / r
    masks = {
        "circle": lambda: dx**2 + dy**2 <= 1,
        "square": lambda: (np.abs(dx) <= 0.85) & (np.abs(dy) <= 0.85),
        "triangle": lambda: (dy >= -1) & (dy <= 0.8) & (np.abs(dx) <= (dy + 1) / 1.8 * 1.05),
        "diamond": lambda: np.abs(dx) + np.abs(dy) <= 1,
    }
    if shape not in masks:
        raise ValueError(f"shape: received {shape!r}, expected one of {', '.join(SHAPES)}")
    return masks[shape]()


def draw_digit(frame: np.ndarray, digit: int, box: tuple, color=(0, 0, 0)) -> None:
    """Draw a seven-segment `digit` in place inside box (y0, y1, x0, x1)."""
    y0, y1, x0, x1 = box
    h = y1 - y0
    th = max(2, h // 7)
    mid = y0 + h // 2
    rects = {
        "a": (y0, y0 + th, x0, x1), "g": (mid - th // 2, mid - th // 2 + th, x0, x1), "d": (y1 - th, y1, x0, x1),
        "f": (y0, mid, x0, x0 + th), "b": (y0, mid, x1 - th, x1),
        "e": (mid, y1, x0, x0 + th), "c": (mid, y1, x1 - th, x1),
    }
    for segment in DIGIT_SEGMENTS[int(digit)]:
        a, b, c, d = rects[segment]
        frame[a:b, c:d] = color


def draw_needle(size: tuple, color, shape: str, digit: int | None) -> np.ndarray:
    """(H, W, 3) uint8: a `color` (name or RGB) `shape` on a light grey ground, `digit` in black at its center."""
    width, height = size
    rgb = COLORS[color] if isinstance(color, str) else tuple(int(c) for c in color)
    frame = np.full((height, width, 3), BACKGROUND, np.uint8)
    frame[_shape_mask(shape, height, width)] = rgb
    if digit is not None:
        dh = max(7, int(0.36 * min(height, width)))
        dw = max(4, dh * 3 // 5)
        y0 = (height - dh) // 2 + (dh // 8 if shape == "triangle" else 0)  # the triangle is wider below
        x0 = (width - dw) // 2
        draw_digit(frame, digit, (y0, y0 + dh, x0, x0 + dw))
    return frame


def look_alike_color(color: str, similarity: float, avoid=()) -> tuple:
    """A color `similarity` of the way from a contrasting named color to `color` (0: the contrast itself)."""
    names = [n for n in COLORS if n != color and n not in avoid] or [n for n in COLORS if n != color]
    target = np.asarray(COLORS[color], np.float64)
    contrast = max(names, key=lambda n: float(np.abs(np.asarray(COLORS[n]) - target).sum()))
    mix = similarity * target + (1 - similarity) * np.asarray(COLORS[contrast], np.float64)
    return tuple(int(round(v)) for v in mix)


def fit(frame: np.ndarray, size: tuple) -> np.ndarray:
    """Resize an (h, w, 3) frame to size (W, H), letterboxed on black so its aspect ratio is kept."""
    from PIL import Image

    width, height = size
    h, w = frame.shape[:2]
    scale = min(width / w, height / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = np.asarray(Image.fromarray(frame).resize((nw, nh), resample=Image.Resampling.BICUBIC))
    out = np.zeros((height, width, 3), np.uint8)
    y0, x0 = (height - nh) // 2, (width - nw) // 2
    out[y0 : y0 + nh, x0 : x0 + nw] = resized
    return out


def read_picture(path, size: tuple, fps: float, max_frames: int = 64) -> Picture:
    """An image file (one frame) or a short clip (its frames sampled at `fps`, at most `max_frames`), fitted to
    size (W, H)."""
    from PIL import Image

    path = Path(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        try:
            with Image.open(path) as image:
                rgb = np.asarray(image.convert("RGB"))
        except OSError as e:
            raise ValueError(f"{path}: cannot be read as an image ({e})") from None
        return Picture(path.name, fit(rgb, size)[None])
    from videorope_trt.media.video_io import frames_at_fps

    frames = []
    for frame in frames_at_fps(path, fps):
        frames.append(fit(frame, size))
        if len(frames) > max_frames:
            raise ValueError(f"{path}: a needle clip holds at most {max_frames} frames at {fps:g} fps; "
                             f"received a longer one (cut it, or use an image)")
    if not frames:
        raise ValueError(f"{path}: no frames decoded; expected an image or a short video clip")
    return Picture(path.name, np.stack(frames))
