"""Layout segments: `("text", n)`, `("image", h, w)`, `("video", t, h, w)`, validated into one form.

h, w are on the LLM grid after the 2x2 spatial merge; t counts temporal slices (2 frames each in Qwen2-VL).
An image is a video with one slice, so every index rule sees `Segment(kind, n, t, h, w)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_ARITY = {"text": 1, "image": 2, "video": 3}


@dataclass(frozen=True)
class Segment:
    kind: str  # "text", "image" or "video"
    n: int  # number of tokens: n for text, t*h*w for vision
    t: int = 1
    h: int = 1
    w: int = 1


def _as_int(value, what: str, seg) -> int:
    if isinstance(value, bool) or not float(value).is_integer():
        raise ValueError(f"segment {seg!r}: {what} must be a whole number, got {value!r}")
    return int(value)


def parse_segment(seg) -> Segment:
    """One segment tuple → `Segment`; sizes must be positive whole numbers."""
    if isinstance(seg, Segment):
        return seg
    if not isinstance(seg, (tuple, list)) or not seg or seg[0] not in _ARITY:
        raise ValueError(f"segment {seg!r}: expected ('text', n), ('image', h, w) or ('video', t, h, w)")
    kind, sizes = seg[0], list(seg[1:])
    if len(sizes) != _ARITY[kind]:
        raise ValueError(f"segment {seg!r}: a {kind} segment takes {_ARITY[kind]} size(s), got {len(sizes)}")
    names = {"text": ("n",), "image": ("h", "w"), "video": ("t", "h", "w")}[kind]
    vals = [_as_int(v, name, seg) for v, name in zip(sizes, names)]
    for v, name in zip(vals, names):
        if v <= 0:
            raise ValueError(f"segment {seg!r}: {name} must be positive, got {v}")
    if kind == "text":
        return Segment("text", vals[0])
    t, h, w = ([1] + vals) if kind == "image" else vals
    return Segment(kind, t * h * w, t, h, w)


def parse_segments(segments) -> list[Segment]:
    """A sequence of segment tuples → list of `Segment`; at least one segment."""
    if isinstance(segments, (str, bytes)) or segments is None:
        raise ValueError(f"segments must be a sequence of tuples, got {segments!r}")
    out = [parse_segment(s) for s in segments]
    if not out:
        raise ValueError("segments is empty: expected at least one ('text', n), ('image', h, w) or ('video', t, h, w)")
    return out


def parse_layout(text: str) -> list[Segment]:
    """`"text:3,video:2x2x3,image:2x3,text:2"` → segments (the `positions` command's `--layout`)."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, _, sizes = part.partition(":")
        if not sizes:
            raise ValueError(f"layout part {part!r}: expected kind:sizes such as text:3, image:2x3, video:2x2x3")
        try:
            vals = [float(v) for v in sizes.lower().split("x")]
        except ValueError:
            raise ValueError(f"layout part {part!r}: sizes must be numbers joined by 'x'") from None
        if not all(math.isfinite(v) for v in vals):
            raise ValueError(f"layout part {part!r}: sizes must be finite")
        out.append(parse_segment((kind.strip(), *vals)))
    return parse_segments(out)
