"""Video decode, sampling and preprocessing against transformers' own Qwen2-VL processor and literal loops.

Reference: transformers 5.24 `Qwen2VLImageProcessorPil` (the PIL/NumPy processor: its resize, rescale,
normalize and patchify). Its video processor imports torchvision, which this project does not install, so the
video patch layout is checked against (a) the image processor on videos whose two frames per slice are equal
and (b) a literal loop over Qwen2-VL's patch layout.
"""

import json
import math
import tracemalloc

import numpy as np
import pytest

from videorope_trt.media.synthetic import make_synthetic_video, read_counter
from videorope_trt.media.video import (
    ProcessorConfig,
    iter_video_chunks,
    load_video,
    preprocess_frames,
    resize_frame,
    sample_indices,
)
from videorope_trt.media.video_io import iter_frames, probe_video

CFG = ProcessorConfig(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 12)  # small: fast tests
ATOL = 1e-6


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    # 4 s at 8 fps, 128x96: 32 frames numbered 0..31 by the drawn counter.
    return make_synthetic_video(tmp_path_factory.mktemp("v") / "clip.mp4", seconds=4, fps=8, width=128,
                                height=96, seed=7)


@pytest.fixture(scope="module")
def raw_frames(video):
    return [f.to_ndarray(format="rgb24") for _, f in iter_frames(video.path)]


@pytest.fixture(scope="module")
def hf():
    import transformers.models.qwen2_vl.image_processing_pil_qwen2_vl as pil
    return pil


def _hf_processor(hf, cfg=CFG):
    return hf.Qwen2VLImageProcessorPil(min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels,
                                       patch_size=cfg.patch_size, merge_size=cfg.merge_size,
                                       temporal_patch_size=cfg.temporal_patch_size)


def _hf_normalized(hf, frame, cfg=CFG):
    """One frame through transformers' resize → rescale → normalize: (C, H, W) float32."""
    from transformers.image_utils import SizeDict

    proc = _hf_processor(hf, cfg)
    chw = np.moveaxis(frame, -1, 0)
    size = SizeDict(shortest_edge=cfg.min_pixels, longest_edge=cfg.max_pixels)
    chw = proc.resize(chw, size=size, resample=proc.resample, factor=cfg.factor)
    chw = proc.rescale(chw, proc.rescale_factor)
    return proc.normalize(chw, proc.image_mean, proc.image_std)


def _loop_patchify(frames_chw, cfg=CFG):
    """Qwen2-VL's patch layout written out: token (t, bh, bw, mh, mw), value (c, k, y, x) of frame t·tp + k."""
    tp, p, m = cfg.temporal_patch_size, cfg.patch_size, cfg.merge_size
    frames = list(frames_chw) + [frames_chw[-1]] * (-len(frames_chw) % tp)
    c, height, width = frames[0].shape
    rows = []
    for t in range(len(frames) // tp):
        for bh in range(height // p // m):
            for bw in range(width // p // m):
                for mh in range(m):
                    for mw in range(m):
                        y0, x0 = (bh * m + mh) * p, (bw * m + mw) * p
                        rows.append(np.concatenate([
                            frames[t * tp + k][ch, y0:y0 + p, x0:x0 + p].ravel()
                            for ch in range(c) for k in range(tp)]))
    return np.stack(rows)


def test_smart_resize_matches_transformers(hf):
    rng = np.random.default_rng(0)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(8, 4000, 2))
        lo = int(rng.integers(1, 200)) * 28 * 28
        hi = lo + int(rng.integers(0, 2000)) * 28 * 28
        cfg = ProcessorConfig(min_pixels=lo, max_pixels=hi)
        if max(h, w) / min(h, w) > 200:
            continue
        assert cfg.target_size(h, w) == hf.smart_resize(h, w, factor=28, min_pixels=lo, max_pixels=hi), (h, w, lo, hi)


def test_single_slice_matches_transformers_image_processor(hf, raw_frames):
    proc = _hf_processor(hf)
    for frame in (raw_frames[3], np.random.default_rng(1).integers(0, 256, (61, 107, 3), dtype=np.uint8)):
        ref = proc(images=[frame], return_tensors="np")
        size = CFG.target_size(*frame.shape[:2])
        ours, grid = preprocess_frames(np.stack([resize_frame(frame, size)] * 2), CFG)
        np.testing.assert_array_equal(grid, ref["image_grid_thw"][0])
        np.testing.assert_allclose(ours, ref["pixel_values"], rtol=0, atol=ATOL)


def test_paired_frames_equal_transformers_images(hf, raw_frames):
    # A video whose two frames per slice are equal is, slice by slice, Qwen2-VL's image input.
    picks = [raw_frames[i] for i in (0, 9, 20)]
    ref = _hf_processor(hf)(images=picks, return_tensors="np")
    size = CFG.target_size(96, 128)
    ours, grid = preprocess_frames(np.stack([resize_frame(f, size) for f in picks for _ in range(2)]), CFG)
    assert tuple(grid) == (3, *ref["image_grid_thw"][0][1:])
    np.testing.assert_allclose(ours, ref["pixel_values"], rtol=0, atol=ATOL)


@pytest.mark.parametrize("count", [4, 5])  # 5: the last slice is padded by repeating the last frame
def test_distinct_frames_match_transformers_steps_and_literal_layout(hf, raw_frames, count):
    picks = raw_frames[1:1 + count]
    size = CFG.target_size(96, 128)
    ours, grid = preprocess_frames(np.stack([resize_frame(f, size) for f in picks]), CFG)
    ref = _loop_patchify([_hf_normalized(hf, f) for f in picks])
    assert tuple(grid) == (math.ceil(count / 2), size[0] // 14, size[1] // 14)
    assert ours.shape == ref.shape == (int(np.prod(grid)), 3 * 2 * 14 * 14)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=ATOL)


def test_load_video_end_to_end_matches_reference(hf, video, raw_frames):
    out = load_video(video.path, fps=2.0, processor=CFG)
    # 32 frames at 8 fps sampled at 2 fps: 8 frames, every 4th; timestamps from the stream.
    np.testing.assert_array_equal(out.frame_indices, [0, 4, 8, 12, 16, 20, 24, 28])
    np.testing.assert_allclose(out.timestamps, out.frame_indices / 8.0, atol=1e-9)
    assert [read_counter(raw_frames[i], video.counter) for i in out.frame_indices] == list(out.frame_indices)
    assert out.fps == pytest.approx(2.0) and out.second_per_grid_t == pytest.approx(1.0)
    ref = _loop_patchify([_hf_normalized(hf, raw_frames[i]) for i in out.frame_indices])
    np.testing.assert_allclose(out.pixel_values, ref, rtol=0, atol=ATOL)
    assert out.pixel_values.dtype == np.float32 and out.grid_thw.dtype == np.int64
    np.testing.assert_allclose(out.slice_times(), [0.25, 1.25, 2.25, 3.25])
    assert out.num_tokens == out.grid_thw[0] * out.grid_thw[1] * out.grid_thw[2] // 4


def test_sample_indices_rule():
    # count = total/src·fps, clamped to [min_frames, min(max_frames, total)], floored to even; k·total//count.
    np.testing.assert_array_equal(sample_indices(32, 8.0, fps=2.0), [0, 4, 8, 12, 16, 20, 24, 28])
    np.testing.assert_array_equal(sample_indices(32, 8.0, fps=0.1), [0, 8, 16, 24])  # min_frames 4
    np.testing.assert_array_equal(sample_indices(32, 8.0, fps=2.0, max_frames=5), [0, 8, 16, 24])
    np.testing.assert_array_equal(sample_indices(7, 8.0, fps=None), [0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(sample_indices(1, 8.0, fps=2.0), [0])  # padding fills the slice
    import torch
    for total in range(1, 400, 3):
        for fps in (0.5, 1.0, 2.0, 3.0):
            got = sample_indices(total, 24.0, fps=fps)
            count = math.floor(min(max(total / 24.0 * fps, 4), total) / 2) * 2 or min(total, 2)
            assert len(got) == count and len(got) % 2 == 0 or total < 2
            assert np.all(np.diff(got) > 0) and got[0] == 0 and got[-1] < total
            # transformers' float32 arange: the same frames up to one index of rounding.
            hf_idx = torch.arange(0, total, total / count).int().numpy()[:count]
            assert np.abs(hf_idx - got[:len(hf_idx)]).max() <= 1


def test_time_range_and_max_frames(video, raw_frames):
    out = load_video(video.path, fps=4.0, start=1.0, end=2.5, processor=CFG)
    assert np.all((out.timestamps >= 1.0) & (out.timestamps < 2.5))
    counters = [read_counter(raw_frames[int(round(t * 8))], video.counter) for t in out.timestamps]
    assert counters == [8 + i for i in out.frame_indices]
    np.testing.assert_array_equal(out.frame_indices, [0, 2, 4, 6, 8, 10])
    out = load_video(video.path, fps=None, max_frames=6, processor=CFG)
    assert len(out.timestamps) == 6 and out.grid_thw[0] == 3


def test_token_budget_lowers_resolution_then_frames(video):
    full = load_video(video.path, fps=2.0, processor=CFG)
    for budget in (full.num_tokens, 20, 9, 2):
        out = load_video(video.path, fps=2.0, token_budget=budget, processor=CFG)
        assert out.num_tokens <= budget
    lowered = load_video(video.path, fps=2.0, token_budget=12, processor=CFG)
    assert len(lowered.timestamps) == len(full.timestamps)  # 4 slices of 3 tokens: resolution gave way
    assert tuple(lowered.grid_thw[1:]) != tuple(full.grid_thw[1:])
    few = load_video(video.path, fps=2.0, token_budget=2, processor=CFG)
    assert few.grid_thw[0] < full.grid_thw[0] and few.fps < full.fps
    with pytest.raises(ValueError, match="token_budget: received 0"):
        load_video(video.path, token_budget=0, processor=CFG)


def test_chunks_concatenate_to_the_whole_video(video):
    whole = load_video(video.path, fps=4.0, processor=CFG)
    chunks = list(iter_video_chunks(video.path, 4, fps=4.0, processor=CFG))
    assert len(chunks) == 4
    np.testing.assert_array_equal(np.concatenate([c.pixel_values for c in chunks]), whole.pixel_values)
    np.testing.assert_array_equal(np.concatenate([c.timestamps for c in chunks]), whole.timestamps)
    padded = list(iter_video_chunks(video.path, 6, fps=4.0, processor=CFG))
    assert [len(c.timestamps) for c in padded] == [6, 6, 4] and padded[-1].grid_thw[0] == 2


def _peak_bytes(fn):
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_chunked_memory_is_flat(tmp_path):
    short = make_synthetic_video(tmp_path / "short.mp4", seconds=8, fps=8, width=128, height=96)
    long = make_synthetic_video(tmp_path / "long.mp4", seconds=40, fps=8, width=128, height=96)

    def chunked(v):
        return lambda: sum(len(c.timestamps) for c in iter_video_chunks(v.path, 4, fps=8.0, processor=CFG))

    assert _peak_bytes(chunked(long)) < 1.5 * _peak_bytes(chunked(short))
    # The measure can see growth: holding every frame grows with the length.
    whole_short = _peak_bytes(lambda: load_video(short.path, fps=8.0, processor=CFG))
    assert _peak_bytes(lambda: load_video(long.path, fps=8.0, processor=CFG)) > 3 * whole_short


def test_other_containers_and_codecs(tmp_path):
    v = make_synthetic_video(tmp_path / "clip.mkv", seconds=2, fps=6, width=96, height=64, codec="mpeg4")
    info = probe_video(v.path)
    assert (info.width, info.height, info.num_frames, info.codec) == (96, 64, 12, "mpeg4")
    out = load_video(v.path, fps=3.0, processor=CFG)
    np.testing.assert_array_equal(out.frame_indices, [0, 2, 4, 6, 8, 10])


def test_from_checkpoint_reads_both_layouts(tmp_path, hf):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2,
         "merge_size": 2, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.5, 1.0]}))
    cfg = ProcessorConfig.from_checkpoint(tmp_path)
    assert (cfg.min_pixels, cfg.max_pixels, cfg.image_std) == (3136, 12845056, (0.25, 0.5, 1.0))
    loaded = hf.Qwen2VLImageProcessorPil.from_pretrained(tmp_path)
    assert (loaded.size["shortest_edge"], loaded.size["longest_edge"]) == (cfg.min_pixels, cfg.max_pixels)
    (tmp_path / "video_preprocessor_config.json").write_text(json.dumps(
        {"size": {"shortest_edge": 6272, "longest_edge": 50176}, "patch_size": 14}))
    cfg = ProcessorConfig.from_checkpoint(tmp_path)
    assert (cfg.min_pixels, cfg.max_pixels) == (6272, 50176)
    with pytest.raises(FileNotFoundError, match="no preprocessor_config.json"):
        ProcessorConfig.from_checkpoint(tmp_path / "missing")


def _audio_only(path):
    import av

    with av.open(str(path), "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.rate, frame.pts = 8000, 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def test_unreadable_files_raise_before_decoding(tmp_path, video):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(open(video.path, "rb").read()[:2000])
    for bad in (junk, empty, truncated):
        with pytest.raises(ValueError, match="cannot be read as a video|no video stream|expected a video"):
            load_video(bad, processor=CFG)
    _audio_only(tmp_path / "sound.wav")
    with pytest.raises(ValueError, match=r"no video stream \(streams: audio\)"):
        load_video(tmp_path / "sound.wav", processor=CFG)
    with pytest.raises(FileNotFoundError, match="video file not found"):
        load_video(tmp_path / "missing.mp4", processor=CFG)


def test_a_file_cut_short_is_refused_with_the_numbers(video, tmp_path):
    """A faststart MP4 cut in half was answered from the frames before the cut without a word."""
    import re

    from videorope_trt.media.synthetic import cut_short
    from videorope_trt.media.video import TruncatedVideo

    cut = cut_short(video.path, tmp_path / "cut.mp4")
    assert probe_video(cut).num_frames == 32  # the index, first in the file, still declares every frame
    assert load_video(video.path, processor=CFG).truncated == ""
    with pytest.raises(TruncatedVideo) as err:
        load_video(cut, processor=CFG)
    decoded = int(re.search(r"declares 32 frames \(4.00 s\) but it ended after (\d+) frames", str(err.value))[1])
    assert 0 < decoded < 32 and "--allow-truncated-video" in str(err.value)
    planned = load_video(video.path, processor=CFG).frame_indices
    assert f"only {int((planned < decoded).sum())} of the {len(planned)} planned frames were read" in str(err.value)
    got = load_video(cut, processor=CFG, allow_truncated=True)  # asked for: the frames read, and why so few
    np.testing.assert_array_equal(got.frame_indices, planned[planned < decoded])
    assert got.truncated == err.value.facts and "cut short or damaged" in got.truncated


def test_a_decoder_failure_mid_file_is_a_truncation(video, monkeypatch):
    from videorope_trt.media import video as V

    def failing(path, start=0.0, end=None):
        for k, item in enumerate(iter_frames(path, start, end)):
            if k == 20:
                raise ValueError(f"{path}: decoding failed (Invalid data found when processing input)")
            yield item

    monkeypatch.setattr(V, "iter_frames", failing)
    with pytest.raises(V.TruncatedVideo, match="its decoder failed after 20 frames .*Invalid data"):
        load_video(video.path, processor=CFG)
    assert load_video(video.path, processor=CFG, end=2.0).truncated == ""  # planned frames all before the failure
    got = load_video(video.path, processor=CFG, allow_truncated=True)
    assert got.frame_indices.max() < 20 and "decoder failed" in got.truncated


@pytest.mark.parametrize("kwargs, message", [
    (dict(start=4.0), r"start: received 4.0, expected 0 <= start < duration \(4.000 s\)"),
    (dict(start=-1.0), "start: received -1.0"),
    (dict(start=2.0, end=2.0), "expected end > start"),
    (dict(start=1.0, end=0.5), "expected end > start"),
    (dict(fps=0), "fps: received 0"),
    (dict(max_frames=0), "max_frames: received 0"),
    (dict(token_budget=-5), "token_budget: received -5"),
    (dict(token_budget=1, processor=ProcessorConfig(min_pixels=56 * 56 * 4, max_pixels=56 * 56 * 8)),
     "token_budget: received 1, expected at least"),
])
def test_bad_requests_name_what_was_received(video, kwargs, message):
    kwargs = {"processor": CFG, **kwargs}
    with pytest.raises(ValueError, match=message):
        load_video(video.path, **kwargs)


def test_bad_processor_settings():
    with pytest.raises(ValueError, match="min_pixels=5000 > max_pixels=4000"):
        ProcessorConfig(min_pixels=5000, max_pixels=4000)
    with pytest.raises(ValueError, match="max_pixels: received 10000000000"):
        ProcessorConfig(max_pixels=100000 * 100000)
    with pytest.raises(ValueError, match="patch_size: received 0"):
        ProcessorConfig(patch_size=0)
    with pytest.raises(ValueError, match="aspect ratio"):
        CFG.target_size(10, 5000)
    with pytest.raises(ValueError, match="frames_per_chunk: received 3"):
        next(iter_video_chunks("unused.mp4", 3, processor=CFG))
    with pytest.raises(ValueError, match=r"frames: received uint8 \(0, 28, 28, 3\)"):
        preprocess_frames(np.zeros((0, 28, 28, 3), np.uint8), CFG)
    with pytest.raises(ValueError, match="multiples of 28"):
        preprocess_frames(np.zeros((2, 30, 28, 3), np.uint8), CFG)
