"""Batches (left padding, rope_deltas) and decode positions."""

import numpy as np
import pytest

from videorope_trt.rope import batch_positions, decode_positions, get_variant, position_ids

SAMPLES = [
    [("text", 3), ("video", 2, 2, 3), ("text", 2)],
    [("text", 1), ("image", 3, 2), ("text", 4), ("video", 3, 1, 2), ("text", 1)],
    [("text", 5)],
]
NAMES = ["vanilla_rope", "tad_rope", "m_rope", "qwen25_mrope", "videorope", "videorope_pp", "vrope", "rope_tv"]


@pytest.mark.parametrize("name", NAMES)
def test_left_padding_and_mask(name):
    bp = batch_positions(name, SAMPLES)
    a = get_variant(name).num_axes
    lengths = [position_ids(name, s).shape[1] for s in SAMPLES]
    big = max(lengths)
    assert bp.positions.shape == (a, 3, big) and bp.positions.dtype == np.float32
    assert bp.attention_mask.dtype == np.int64 and bp.rope_deltas.dtype == np.float32
    for k, (segs, n) in enumerate(zip(SAMPLES, lengths)):
        np.testing.assert_array_equal(bp.attention_mask[k], [0] * (big - n) + [1] * n)
        np.testing.assert_array_equal(bp.positions[:, k, big - n:], position_ids(name, segs))
        np.testing.assert_array_equal(bp.positions[:, k, : big - n], 0)


@pytest.mark.parametrize("name", NAMES)
def test_decode_continues_like_appended_text(name):
    """The first and second generated tokens sit where two more text tokens would."""
    bp = batch_positions(name, SAMPLES)
    big = bp.positions.shape[-1]
    dec = decode_positions(name, bp.rope_deltas, np.array([big, big + 1]))
    assert dec.shape == (get_variant(name).num_axes, 3, 2) and dec.dtype == np.float32
    for k, segs in enumerate(SAMPLES):
        want = position_ids(name, list(segs) + [("text", 2)])[:, -2:]
        np.testing.assert_array_equal(dec[:, k], want)


def test_tad_decode_step_two():
    bp = batch_positions("tad_rope", [[("text", 4)]])
    assert bp.decode_step == 2
    np.testing.assert_array_equal(bp.rope_deltas, [0.0])
    np.testing.assert_array_equal(decode_positions("tad_rope", bp.rope_deltas, [4, 5])[0, 0], [8, 10])


def test_m_rope_deltas_value():
    # worked example: 17 tokens, next text at 8 → delta 8 - 17 = -9; padded to 20 → 8 - 20 = -12
    bp = batch_positions("m_rope", [SAMPLES[0], [("text", 20)]])
    np.testing.assert_array_equal(bp.rope_deltas, [8 - 20, 0])


def test_decode_per_sample_cache_position():
    dec = decode_positions("m_rope", [1.0, -2.0], [[5], [7]])
    np.testing.assert_array_equal(dec[:, :, 0], [[6, 5]] * 3)
    with pytest.raises(ValueError, match=r"\(S,\) or \(B, S\)"):
        decode_positions("m_rope", [1.0, 2.0], [[5], [6], [7]])


def test_batch_fps_per_sample():
    segs = [("text", 1), ("video", 2, 1, 1)]
    bp = batch_positions("qwen25_mrope", [segs, segs], fps=[2.0, 0.5])
    np.testing.assert_array_equal(bp.positions[0, :, 2], [3, 9])  # 1 + 1*2, 1 + 1*8
    with pytest.raises(ValueError, match="one entry per sample"):
        batch_positions("qwen25_mrope", [segs, segs], fps=[2.0, 0.5, 1.0])
