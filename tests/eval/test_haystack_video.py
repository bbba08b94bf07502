"""Haystack videos: where needles and distractors go (hand-worked), and the built video decoded back: every needle and
distractor is found by its pixels exactly at the frames the build declares, and nowhere else; haystack frames keep
their order (read from a synthetic haystack's frame counter); a needle clip keeps its frames; the cache reuses a
built video."""

import json

import numpy as np
import pytest
from PIL import Image

from videorope_trt.eval.build import BuiltVideo, VideoSpec, build_video, plan_segments
from videorope_trt.eval.haystack import generated_frames, open_haystack
from videorope_trt.eval.spec import load_task, task_from_dict
from videorope_trt.eval.trials import insertion_points, make_item
from videorope_trt.media.synthetic import CounterLayout, make_synthetic_video, pick_encoder, read_counter
from videorope_trt.media.video_io import iter_frames

SIZE, FPS, TP = (96, 64), 2.0, 2
MATCH, APART = 6.0, 10.0  # mean absolute difference of a found picture after encoding, and of any other frame


@pytest.mark.parametrize("args, points", [
    ((8, 1, 0.0, None), ((0,), ())), ((8, 1, 0.5, None), ((4,), ())), ((8, 1, 1.0, None), ((8,), ())),
    ((8, 3, 0.0, None), ((0, 2, 5), ())), ((8, 3, 1.0, None), ((2, 5, 8), ())),
    ((8, 1, 0.3, 3), ((2,), (3, 6))), ((10, 1, 0.29, None), ((2,), ())), ((2, 1, 0.5, 4), ((1,), ())),
])
def test_insertion_points_hand_worked(args, points):
    assert insertion_points(*args) == points


def test_segments_hand_worked():
    # 3 haystack slices of 2 frames, a 2-frame needle before slice 1, distractors before slices 1 and 2
    assert plan_segments(3, 2, (1,), (2,), (1, 2), 2) == [
        ("haystack", 0, 0, 2), ("needle", 0, 2, 2), ("distractor", 0, 4, 2), ("haystack", 2, 6, 2),
        ("distractor", 1, 8, 2), ("haystack", 4, 10, 2)]


def _decode(path) -> np.ndarray:
    return np.stack([f.to_ndarray(format="rgb24") for _, f in iter_frames(path)]).astype(np.int16)


def _found(frames, picture) -> list:
    """Indices of the decoded frames that show `picture` (its frames in turn, for a clip, match any of them)."""
    errors = np.stack([np.abs(frames - p.astype(np.int16)).mean(axis=(1, 2, 3)) for p in picture.frames]).min(0)
    assert np.all((errors < MATCH) | (errors > APART)), np.round(errors, 1)  # nothing ambiguous in between
    return np.flatnonzero(errors < MATCH).tolist()


def _spec(haystack=None) -> VideoSpec:
    return VideoSpec(SIZE, FPS, TP, open_haystack(haystack), pick_encoder())


def _frames_of(ranges) -> list:
    return [k for start, end in ranges for k in range(start, end)]


def test_needle_and_periodic_distractors_found_at_their_declared_frames(tmp_path):
    task = task_from_dict({"name": "d", "generate": {"kind": "niah"}, "distractors": {"period": 4, "similarity": 0.6}})
    item = make_item(task, 0, 5, SIZE, FPS)
    built = build_video(tmp_path, _spec(), item, frames=16, depth=0.5, period=4, seed=5)
    # 8 haystack slices: the needle before slice 4, distractors before slices 2, 4 and 6 (after the needle at 4)
    assert built.needles == ((10, 12),) and built.distractors == ((4, 6), (12, 14), (18, 20)) and built.frames == 24
    frames = _decode(built.path)
    assert len(frames) == 24
    assert _found(frames, item.needles[0]) == [10, 11]
    assert _found(frames, item.distractor) == _frames_of(built.distractors)
    # every other frame is the generated haystack, in order
    inserted = set(_frames_of(built.needles + built.distractors))
    rest = [k for k in range(24) if k not in inserted]
    hay = generated_frames(SIZE, 5)
    expected = np.stack([next(hay) for _ in range(16)]).astype(np.int16)
    assert np.abs(frames[rest] - expected).mean(axis=(1, 2, 3)).max() < MATCH


def test_file_haystack_sampled_in_order_and_looped(tmp_path):
    # a 2 s haystack at 4 fps, sampled at 2 fps: its frames 0, 2, 4, 6, then again from the start
    source = make_synthetic_video(tmp_path / "hay.mp4", seconds=2, fps=4, width=SIZE[0], height=SIZE[1], seed=2)
    task = load_task("v_ruler_ordering")
    item = make_item(task, 0, 0, SIZE, FPS)
    built = build_video(tmp_path / "v", _spec(tmp_path / "hay.mp4"), item, frames=12, depth=0.0, period=None, seed=0)
    assert built.needles == ((0, 2), (6, 8), (12, 14)) and built.frames == 18  # slices 0, 2, 4 of 6
    frames = _decode(built.path)
    for picture, (start, end) in zip(item.needles, built.needles):
        assert _found(frames, picture) == list(range(start, end))
    rest = [k for k in range(18) if k not in _frames_of(built.needles)]
    layout = CounterLayout.for_frame(*SIZE, source.num_frames)
    assert [read_counter(frames[k].astype(np.uint8), layout) for k in rest] == [0, 2, 4, 6] * 3


def test_user_needles_image_and_clip(tmp_path):
    make_synthetic_video(tmp_path / "clip.mp4", seconds=1.5, fps=2, width=SIZE[0], height=SIZE[1], seed=9)
    image = np.zeros((40, 40, 3), np.uint8)
    image[:, :20] = (250, 20, 20)
    Image.fromarray(image).save(tmp_path / "half.png")
    (tmp_path / "t.json").write_text(json.dumps({"name": "user", "items": [
        {"needles": ["half.png", "clip.mp4"], "question": "What is shown?", "options": ["red", "blue"],
         "answer": "A"}]}))
    item = make_item(load_task(tmp_path / "t.json"), 0, 0, SIZE, FPS)
    assert item.needles[0].frames.shape == (1, 64, 96, 3) and item.needles[1].frames.shape == (3, 64, 96, 3)
    # the square image is letterboxed: 64 x 64 in the middle of the 96-wide frame, black at the sides
    assert item.needles[0].frames[0, :, :16].max() == 0 and item.needles[0].frames[0, 32, 20].tolist() == [250, 20, 20]
    built = build_video(tmp_path / "v", _spec(), item, frames=8, depth=0.0, period=None, seed=1)
    # two needles over 4 slices: before slices 0 and 2; the clip's 3 frames fill 2 slices (its last frame repeated)
    assert built.needles == ((0, 2), (6, 10)) and built.frames == 14
    frames = _decode(built.path)
    assert _found(frames, item.needles[0]) == [0, 1]
    layout = CounterLayout.for_frame(*SIZE, 3)
    assert [read_counter(frames[k].astype(np.uint8), layout) for k in range(6, 10)] == [0, 1, 2, 2]


def test_built_videos_are_cached_by_content(tmp_path):
    item = make_item(load_task("v_niah"), 0, 0, SIZE, FPS)
    first = build_video(tmp_path, _spec(), item, frames=4, depth=0.0, period=None, seed=0)
    stamp = (tmp_path / f"{first.key}.mp4").stat().st_mtime_ns
    again = build_video(tmp_path, _spec(), item, frames=4, depth=0.0, period=None, seed=0)
    assert isinstance(again, BuiltVideo) and again == first
    assert (tmp_path / f"{first.key}.mp4").stat().st_mtime_ns == stamp  # not encoded again
    other = build_video(tmp_path, _spec(), item, frames=4, depth=1.0, period=None, seed=0)
    assert other.key != first.key and other.needles == ((4, 6),)
    with pytest.raises(ValueError, match="received 5 frames, expected a multiple of the model's temporal patch size 2"):
        build_video(tmp_path, _spec(), item, frames=5, depth=0.0, period=None, seed=0)
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        open_haystack(tmp_path / "nothing.mp4")


def test_lengths_in_tokens_become_frames():
    from videorope_trt.eval.trials import frames_for_tokens
    from videorope_trt.media.video import ProcessorConfig

    qwen2vl = ProcessorConfig()  # 448 x 252 resizes to itself: 16 x 9 = 144 merged tokens a temporal slice (2 frames)
    assert frames_for_tokens(4096, (448, 252), qwen2vl) == 4096 // 144 * 2 == 56
    assert frames_for_tokens(100, (448, 252), qwen2vl) == 2  # at least one slice
