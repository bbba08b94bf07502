"""The worked example of docs/facts.md, "Position indices of the RoPE variants" (n=3, T=2, H=2, W=3, then 2 text
tokens), for every variant, exact."""

import numpy as np
import pytest

from videorope_trt.rope import VARIANTS, axis_map, get_variant, inv_freq, position_ids

LAYOUT = [("text", 3), ("video", 2, 2, 3), ("text", 2)]
TXT0, TXT1 = [0, 1, 2], None


def rows(*rs):
    return np.array(rs, dtype=np.float32)


def same(r):
    return rows(r, r, r)


MROPE_H = [0, 1, 2, 3, 3, 3, 4, 4, 4, 3, 3, 3, 4, 4, 4]
MROPE_W = [0, 1, 2, 3, 4, 5, 3, 4, 5, 3, 4, 5, 3, 4, 5]
# diagonal layout, δ=2: t = 3 + 2f; h = t + i - 0; w = t + j - 1
DL2_T = [0, 1, 2, 3, 3, 3, 3, 3, 3, 5, 5, 5, 5, 5, 5]
DL2_H = [0, 1, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6]
DL2_W = [0, 1, 2, 2, 3, 4, 2, 3, 4, 4, 5, 6, 4, 5, 6]
# δ=1: t = 3 + f
DL1_T = [0, 1, 2, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4]
DL1_H = [0, 1, 2, 3, 3, 3, 4, 4, 4, 4, 4, 4, 5, 5, 5]
DL1_W = [0, 1, 2, 2, 3, 4, 2, 3, 4, 3, 4, 5, 3, 4, 5]

EXPECTED = {
    "vanilla_rope": same(list(range(17))),
    "tad_rope": same([0, 2, 4, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 20, 22]),
    "m_rope": rows([0, 1, 2] + [3] * 6 + [4] * 6 + [6, 7], MROPE_H + [6, 7], MROPE_W + [6, 7]),
    "qwen25_mrope": rows([0, 1, 2] + [3] * 6 + [5] * 6 + [6, 7], MROPE_H + [6, 7], MROPE_W + [6, 7]),
    # each slice an image at s_f; next slice at s_f + max(H, W) = s_f + 3
    "qwen3_mrope": rows([0, 1, 2] + [3] * 6 + [6] * 6 + [9, 10],
                        [0, 1, 2, 3, 3, 3, 4, 4, 4, 6, 6, 6, 7, 7, 7, 9, 10],
                        [0, 1, 2, 3, 4, 5, 3, 4, 5, 6, 7, 8, 6, 7, 8, 9, 10]),
    "videorope": rows(DL2_T + [6, 7], DL2_H + [6, 7], DL2_W + [6, 7]),
    "videorope_pp": rows(DL2_T + [7, 8], DL2_H + [7, 8], DL2_W + [7, 8]),
    "ttxy_rope": rows(DL2_T + [7, 8], DL2_H + [7, 8], DL2_W + [7, 8]),
    "m_modify_rope": rows(DL1_T + [5, 6], DL1_H + [5, 6], DL1_W + [5, 6]),
    "m_modify_margin_rope": rows(DL1_T + [6, 7], DL1_H + [6, 7], DL1_W + [6, 7]),
    "m_modify_no_center_rope": rows([0, 1, 2] + [3] * 6 + [4] * 6 + [5, 6], MROPE_H + [5, 6], MROPE_W + [5, 6]),
    "pos_only": rows(DL1_T + [5, 6], DL1_H + [5, 6], DL1_W + [5, 6]),
    "t_only": rows([0, 1, 2] + [3] * 6 + [4] * 6 + [6, 7], MROPE_H + [6, 7], MROPE_W + [6, 7]),
    # paper Eq. (7): h = t + i - H/2 = t + i - 1, w = t + j - 1.5; text after s + δT = 7
    "videorope_paper": rows(DL2_T + [7, 8], [0, 1, 2, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 7, 8],
                            [0, 1, 2, 1.5, 2.5, 3.5, 1.5, 2.5, 3.5, 3.5, 4.5, 5.5, 3.5, 4.5, 5.5, 7, 8]),
    "vrope": rows([0, 1, 2, 3, 4, 5, 4, 5, 6, 7, 8, 9, 8, 9, 10, 11, 12],
                  [0, 1, 2, 5, 4, 3, 6, 5, 4, 9, 8, 7, 10, 9, 8, 11, 12],
                  [0, 1, 2, 4, 5, 6, 3, 4, 5, 8, 9, 10, 7, 8, 9, 11, 12],
                  [0, 1, 2, 6, 5, 4, 5, 4, 3, 10, 9, 8, 9, 8, 7, 11, 12]),
    # rows (t, h, w) = (z, x, y)
    "rope_tv": rows([0, 1, 2] + [8] * 6 + [9] * 6 + [15, 16], [0, 1, 2, 8, 8, 8, 9, 9, 9, 8, 8, 8, 9, 9, 9, 15, 16],
                    [0, 1, 2] + [7.5, 8.5, 9.5] * 4 + [15, 16]),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_worked_example(name):
    got = position_ids(name, LAYOUT)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, EXPECTED[name])


def test_every_variant_has_a_worked_example():
    canonical = {v.name for v in VARIANTS.values()}
    assert canonical - set(EXPECTED) == {"rope_tie"}  # images only: see test_rope_tie_image


def test_rope_tie_image():
    got = position_ids("rope_tie", [("text", 3), ("image", 2, 3), ("text", 2)])
    x, y = [0, 1, 2, 6, 6, 6, 10, 10, 10, 14, 15], [0, 1, 2, 5, 8, 11, 5, 8, 11, 14, 15]
    np.testing.assert_array_equal(got, rows(x, x, y))


def test_qwen25_slow_video():
    # fps = 0.5: second_per_grid_t * tokens_per_second = 4 * 2 = 8
    got = position_ids("qwen25_mrope", LAYOUT, fps=0.5)
    np.testing.assert_array_equal(got[0], [0, 1, 2] + [3] * 6 + [11] * 6 + [12, 13])


def test_vrope_paper_order():
    code = position_ids("vrope", LAYOUT)
    paper = position_ids("vrope", LAYOUT, order="paper")
    np.testing.assert_array_equal(paper, code[[0, 2, 3, 1]])


def test_aliases():
    assert get_variant("time_rope") is get_variant("tad_rope")
    assert get_variant("t_scale2_change_freq") is get_variant("videorope")
    np.testing.assert_array_equal(position_ids("time_rope", LAYOUT), EXPECTED["tad_rope"])


def test_delta_is_float_and_not_rounded():
    got = position_ids("videorope", LAYOUT, delta=0.75)
    np.testing.assert_allclose(got[0, 9], 3.75, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got[0, 15], 3.75 + 1, rtol=0, atol=1e-6)


def test_start_shifts_everything():
    for name in EXPECTED:
        base, shifted = position_ids(name, LAYOUT), position_ids(name, LAYOUT, start=100)
        np.testing.assert_array_equal(shifted, base + 100, err_msg=name)


AXIS_D128 = {
    "m_rope": [0] * 16 + [1] * 24 + [2] * 24,
    "videorope": [1, 2] * 24 + [0] * 16,
    "ttxy_rope": [0, 0, 1, 2, 1, 2, 1, 2] * 8,
    "qwen3_mrope": [0, 1, 2] * 20 + [0] * 4,
    "vrope": [0, 1, 2, 3] * 16,
    "vanilla_rope": [0] * 64,
    "pos_only": [0] * 16 + [1] * 24 + [2] * 24,
    "t_only": [1, 2] * 24 + [0] * 16,
}


@pytest.mark.parametrize("name", sorted(AXIS_D128))
def test_axis_map_d128(name):
    got = axis_map(name, 128)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, AXIS_D128[name])


def test_axis_map_d64_scales_by_fractions():
    np.testing.assert_array_equal(axis_map("m_rope", 64), [0] * 8 + [1] * 12 + [2] * 12)
    np.testing.assert_array_equal(axis_map("videorope", 64), [1, 2] * 12 + [0] * 8)
    np.testing.assert_array_equal(axis_map("qwen3_mrope", 64), [0, 1, 2] * 10 + [0] * 2)


def test_axis_map_odd_head_dim_is_an_error():
    with pytest.raises(ValueError, match="does not scale"):
        axis_map("m_rope", 20)
    with pytest.raises(ValueError, match="positive even"):
        axis_map("m_rope", 63)


def test_plain_inv_freq():
    got = inv_freq(64, 1e6)
    assert got.dtype == np.float32 and got.shape == (32,)
    want = np.array([1e6 ** (-2 * k / 64) for k in range(32)])
    np.testing.assert_allclose(got, want, rtol=1e-6)
