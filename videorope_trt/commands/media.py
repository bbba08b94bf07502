"""`videorope-trt make-video OUT.mp4 --seconds S --fps F --size WxH --seed N`: write a synthetic test video."""

from __future__ import annotations

import re
import time


def parse_size(text: str) -> tuple[int, int]:
    """'320x240' → (320, 240)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise ValueError(f"--size: received {text!r}, expected WIDTHxHEIGHT, e.g. 320x240")
    return int(match.group(1)), int(match.group(2))


def add_arguments(parser, name: str) -> None:
    parser.add_argument("out", help="output video (.mp4, .mov or .mkv)")
    parser.add_argument("--seconds", type=float, default=8.0, help="length in seconds (default 8)")
    parser.add_argument("--fps", type=float, default=4.0, help="frames per second (default 4)")
    parser.add_argument("--size", default="320x240", help="WIDTHxHEIGHT, even sides (default 320x240)")
    parser.add_argument("--seed", type=int, default=0, help="shapes, colors and motion follow the seed")
    parser.add_argument("--codec", default=None, help="libx264 or mpeg4 (default: the first available)")


def run(args, name: str) -> int:
    from videorope_trt.media.synthetic import make_synthetic_video

    width, height = parse_size(args.size)
    began = time.perf_counter()
    video = make_synthetic_video(args.out, seconds=args.seconds, fps=args.fps, width=width, height=height,
                                 seed=args.seed, codec=args.codec)
    print(f"wrote {video.path}: {video.num_frames} frames, {video.width}x{video.height}, {video.fps:g} fps, "
          f"{video.codec}, seed {args.seed} ({time.perf_counter() - began:.1f} s)")
    return 0
