"""Synthetic video: deterministic for a seed, decodes back to the frames it drew, counter readable per frame."""

import hashlib

import numpy as np
import pytest

from videorope_trt.cli import main as cli_main
from videorope_trt.commands.media import parse_size
from videorope_trt.media.synthetic import (
    DIGIT_SEGMENTS,
    CounterLayout,
    draw_counter,
    make_synthetic_video,
    pick_encoder,
    read_counter,
    synthetic_frames,
)
from videorope_trt.media.video_io import iter_frames, probe_video

SPEC = dict(seconds=2.5, fps=6, width=96, height=64)


def _frames(**kw):
    return np.stack(list(synthetic_frames(**{**SPEC, **kw})))


def test_frames_are_deterministic_per_seed():
    a, b, c = _frames(seed=3), _frames(seed=3), _frames(seed=4)
    assert a.shape == (15, 64, 96, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert np.mean(a != c) > 0.3  # another seed: other colors and motion
    assert np.mean(a[0] != a[-1]) > 0.05  # shapes and background move


def test_counter_reads_back_every_value():
    layout = CounterLayout.for_frame(96, 64, 10000)
    frame = np.full((64, 96, 3), 90, np.uint8)
    for value in (0, 1234, 5678, 9090, 9999):
        draw_counter(frame, value, layout)
        assert read_counter(frame, layout) == value
    # Every digit lights a distinct set of segments, so readings are unambiguous.
    assert len({frozenset(s) for s in DIGIT_SEGMENTS.values()}) == 10


def test_written_video_decodes_to_the_drawn_frames(tmp_path):
    v = make_synthetic_video(tmp_path / "a.mp4", seed=5, **SPEC)
    info = probe_video(v.path)
    assert (info.width, info.height, info.num_frames, info.fps) == (96, 64, 15, 6.0)
    assert v.codec == pick_encoder() and info.codec == {"libx264": "h264", "mpeg4": "mpeg4"}[v.codec]
    decoded = [(t, f.to_ndarray(format="rgb24")) for t, f in iter_frames(v.path)]
    assert len(decoded) == 15
    np.testing.assert_allclose([t for t, _ in decoded], np.arange(15) / 6.0, atol=1e-9)
    assert [read_counter(f, v.counter) for _, f in decoded] == list(range(15))
    y0, y1, x0, x1 = v.counter.box
    regions = [f[y0:y1, x0:x1].astype(int) for _, f in decoded]
    # The counter region changes between any two frames: at least part of one segment flips (8→9 is one).
    assert all((np.abs(a - b).max(-1) > 100).sum() >= 6 for a, b in zip(regions, regions[1:]))
    drawn = _frames(seed=5)
    err = np.abs(np.stack([f for _, f in decoded]).astype(int) - drawn).mean()
    assert err < 6, err  # lossy, but the decoded video is the drawn one


def test_same_seed_same_file(tmp_path):
    digests = [hashlib.sha256(open(make_synthetic_video(tmp_path / f"{i}.mp4", seed=1, **SPEC).path, "rb").read())
               .hexdigest() for i in range(2)]
    assert digests[0] == digests[1]


def test_encoders_give_the_same_bytes_for_the_same_frames():
    """test_same_seed_same_file failed once on a loaded two-core machine: encoder threads, and x264's assembly
    (single-threaded too), can change the bytes of two encodes of the same frames. One thread, no assembly."""
    from videorope_trt.media.synthetic import ENCODERS

    assert {name: e["options"]["threads"] for name, e in ENCODERS.items()} == {"libx264": "1", "mpeg4": "1"}
    assert "asm=0" in ENCODERS["libx264"]["options"]["x264-params"].split(":")


def test_mpeg4_fallback_and_other_containers(tmp_path):
    v = make_synthetic_video(tmp_path / "b.mov", seed=2, codec="mpeg4", **SPEC)
    frames = [f.to_ndarray(format="rgb24") for _, f in iter_frames(v.path)]
    assert probe_video(v.path).codec == "mpeg4"
    assert [read_counter(f, v.counter) for f in frames] == list(range(15))


@pytest.mark.parametrize("kwargs, message", [
    (dict(width=100000, height=100000), r"size: received 100000x100000, expected even sides in \[16, 8192\]"),
    (dict(width=97, height=64), "size: received 97x64"),
    (dict(width=40, height=32), "expected at least 49x18"),
    (dict(fps=0), "fps: received 0"),
    (dict(seconds=-1), "seconds: received -1"),
    (dict(codec="vp9"), "codec: received 'vp9'"),
])
def test_bad_requests_leave_no_file(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_synthetic_video(tmp_path / "c.mp4", **{**SPEC, **kwargs})
    assert list(tmp_path.iterdir()) == []


def test_bad_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"received suffix '\.gif'"):
        make_synthetic_video(tmp_path / "c.gif", **SPEC)


def test_make_video_command(tmp_path, capsys):
    out = tmp_path / "cli.mp4"
    assert cli_main(["make-video", str(out), "--seconds", "1", "--fps", "4", "--size", "64x48", "--seed", "9"]) == 0
    assert "4 frames, 64x48" in capsys.readouterr().out
    assert probe_video(out).num_frames == 4
    assert cli_main(["make-video", str(out), "--size", "100000x100000"]) == 2
    assert "size: received 100000x100000" in capsys.readouterr().err
    assert parse_size(" 320X240 ") == (320, 240)
    with pytest.raises(ValueError, match="--size: received '320by240'"):
        parse_size("320by240")
