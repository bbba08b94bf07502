"""inv_freq scalings against direct formulas, rotary tables against the op's numpy reference."""

import math

import numpy as np
import pytest

from videorope_trt.rope import apply_rotary, axis_map, inv_freq, position_ids, rotary_tables
from videorope_trt.rope.apply import video_rope_numpy
from videorope_trt.rope.contract import RotaryAttrs

D, THETA, S, L0 = 128, 1e6, 4.0, 32768


def plain(d=D, theta=THETA):
    return [theta ** (-2 * k / d) for k in range(d // 2)]


def ntk_inv(base):
    return [base ** (-2 * k / D) for k in range(D // 2)]


def test_ntk():
    want = ntk_inv(THETA * S ** (D / (D - 2)))
    np.testing.assert_allclose(inv_freq(D, THETA, "ntk"), want, rtol=1e-6)


def test_yarn_keeps_high_divides_low_frequencies():
    got, p = inv_freq(D, THETA, "yarn").astype(np.float64), np.array(plain())
    np.testing.assert_allclose(got[:24], p[:24], rtol=1e-6)  # k <= 23 unchanged
    np.testing.assert_allclose(got[40:], p[40:] / S, rtol=1e-6)  # k >= 40 divided by s
    # the ramp between is linear in k: low = 23, high = 40 for D=128, θ=1e6, L0=32768
    for k in range(24, 40):
        r = (k - 23) / (40 - 23)
        assert got[k] == pytest.approx(p[k] * (1 - r) + p[k] / S * r, rel=1e-6)


def test_mrope_pp_per_axis():
    got, p = inv_freq(D, THETA, "mrope++").astype(np.float64), np.array(plain())
    ntk = np.array(ntk_inv(THETA * ((L0 * S - 1) / (L0 - 1)) ** (D / (D - 2))))
    np.testing.assert_allclose(got[:16], p[:16], rtol=1e-6)
    np.testing.assert_allclose(got[16:40], 0.5 * p[16:40] / S + 0.5 * ntk[16:40], rtol=1e-6)
    np.testing.assert_allclose(got[40:], ntk[40:], rtol=1e-6)


def test_videorope_pp_v1_scales_time_pairs_only():
    got, p = inv_freq(D, THETA, "videorope++_v1").astype(np.float64), np.array(plain())
    ntk = np.array(ntk_inv(THETA * ((L0 * S - 1) / (L0 - 1)) ** (D / (D - 2))))
    np.testing.assert_allclose(got[:48], p[:48], rtol=1e-6)
    np.testing.assert_allclose(got[48:], ntk[48:], rtol=1e-6)
    # with an explicit variant the time pairs come from its axis map
    amap = axis_map("qwen3_mrope", D)
    got = inv_freq(D, THETA, "videorope++_v1", variant="qwen3_mrope").astype(np.float64)
    np.testing.assert_allclose(got, np.where(amap == 0, ntk, p), rtol=1e-6)


def test_dynamic_only_past_original_length():
    np.testing.assert_allclose(inv_freq(D, THETA, "dynamic", seq_len=L0), plain(), rtol=1e-6)
    seq = 3 * L0
    want = ntk_inv(THETA * (S * seq / L0 - (S - 1)) ** (D / (D - 2)))
    np.testing.assert_allclose(inv_freq(D, THETA, "dynamic", seq_len=seq), want, rtol=1e-6)


def test_videoropepp_dynamic_factor_grows_with_the_length():
    """VideoRoPE++'s vLLM code: d_extra = 2·ceil(64·log_1e6(32768/2π)) = 2·ceil(39.65) = 80 dims complete a period
    within L0; s(L) = (L/2π)^(128/80)/1e6, θ' = θ·(s·L/L0 - (s-1))^(128/126). Worked by hand at L = 2·L0:
    (65536/2π)^1.6 = 10430.38^1.6 = 2.687e6, so s = 2.687 and θ' = 1e6·(2·2.687 - 1.687)^(128/126)."""
    from videorope_trt.rope.scalings import videoropepp_factor

    np.testing.assert_allclose(inv_freq(D, THETA, "videoropepp_dynamic", seq_len=L0), plain(), rtol=1e-6)
    s = videoropepp_factor(2 * L0, THETA, D, L0)
    assert s == pytest.approx(2.687077, rel=1e-5)
    want = ntk_inv(THETA * (2 * s - (s - 1)) ** (D / (D - 2)))
    np.testing.assert_allclose(inv_freq(D, THETA, "videoropepp_dynamic", seq_len=2 * L0), want, rtol=1e-6)
    # unlike `dynamic`, the factor is the length's, not the one given: at 4·L0 it is 8.15, not 4
    assert videoropepp_factor(4 * L0, THETA, D, L0) == pytest.approx(8.145694, rel=1e-5)
    np.testing.assert_array_equal(inv_freq(D, THETA, "videoropepp_dynamic", seq_len=4 * L0, factor=2.0),
                                  inv_freq(D, THETA, "videoropepp_dynamic", seq_len=4 * L0))
    assert not np.allclose(inv_freq(D, THETA, "videoropepp_dynamic", seq_len=4 * L0),
                           inv_freq(D, THETA, "dynamic", seq_len=4 * L0))


@pytest.mark.parametrize("kwargs,match", [
    (dict(scaling="bogus"), "unknown scaling 'bogus'; known scalings: dynamic, mrope\\+\\+, ntk"),
    (dict(scaling="dynamic"), "needs seq_len"),
    (dict(scaling="videoropepp_dynamic"), "scaling 'videoropepp_dynamic' needs seq_len"),
    (dict(scaling="ntk", factor=float("nan")), "factor must be a finite number"),
    (dict(scaling="mrope++", variant="vanilla_rope"), "needs a \\(t, h, w\\) variant"),
    (dict(factor=2.0), "without a scaling"),
])
def test_scaling_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        inv_freq(D, THETA, **kwargs)


LAYOUT = [("text", 3), ("video", 3, 2, 3), ("text", 2)]


@pytest.mark.parametrize("variant,scaling", [("m_rope", None), ("videorope", None), ("vrope", None),
                                             ("videorope", "videorope++_v1"), ("tad_rope", "ntk"),
                                             ("rope_tv", None)])
def test_rotary_tables_match_the_op_reference(variant, scaling):
    d = 64
    pos = position_ids(variant, LAYOUT, **({"delta": 0.7} if variant == "videorope" else {}))
    cos, sin = rotary_tables(variant, pos, d, 1e4, scaling)
    assert cos.shape == sin.shape == (pos.shape[1], d) and cos.dtype == np.float32
    # one angle per (token, frequency) by hand
    freqs = inv_freq(d, 1e4, scaling, **({"variant": variant} if scaling else {})).astype(np.float64)
    amap = axis_map(variant, d)
    for s in range(pos.shape[1]):
        for k in range(d // 2):
            ang = float(pos[amap[k], s]) * freqs[k]
            assert cos[s, k] == pytest.approx(math.cos(ang), abs=1e-5)
            assert sin[s, k + d // 2] == pytest.approx(math.sin(ang), abs=1e-5)
    x = np.random.default_rng(0).standard_normal((1, 2, pos.shape[1], d)).astype(np.float32)
    want = video_rope_numpy(x, pos[:, None], freqs.astype(np.float32), amap, RotaryAttrs())
    np.testing.assert_allclose(apply_rotary(x, cos, sin), want, atol=1e-5)


def test_apply_rotary_torch_equals_numpy():
    import torch
    pos = position_ids("videorope", LAYOUT)
    cos, sin = rotary_tables("videorope", pos, 64, 1e6)
    x = np.random.default_rng(1).standard_normal((2, 3, pos.shape[1], 64)).astype(np.float32)
    got = apply_rotary(torch.from_numpy(x), torch.from_numpy(cos), torch.from_numpy(sin)).numpy()
    np.testing.assert_allclose(got, apply_rotary(x, cos, sin), atol=1e-6)


def test_rotary_tables_shape_error():
    with pytest.raises(ValueError, match=r"must be \(4, L\), got shape \(3, 5\)"):
        rotary_tables("vrope", np.zeros((3, 5)), 64, 1e4)
