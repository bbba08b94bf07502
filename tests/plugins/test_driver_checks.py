"""The driver's error measure and dtype handling can fail: an unwritten element, one wrong element or a rounding
mistake is caught; the bf16 bit conversion rounds to nearest even. No GPU or compiler needed."""

from __future__ import annotations

import numpy as np
import pytest

from videorope_trt.plugins.driver.numerics import compare, from_bits, to_bits
from videorope_trt.plugins.driver.run import cases, make_inputs
from videorope_trt.plugins.reference import VideoRope
from videorope_trt.rope.contract import RotaryAttrs


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
def test_compare_accepts_rounding_and_catches_faults(dtype):
    case = next(c for c in cases() if c.dtype == dtype and c.name.startswith("grid"))
    x, pos, inv, amap = make_inputs(case)
    ref = VideoRope(x.astype(np.float64), pos, inv, amap, RotaryAttrs(case.interleaved, case.layout, case.scale))
    good = from_bits(to_bits(ref.astype(np.float32), dtype), dtype)
    assert compare(good, ref, dtype)["passed"]
    unwritten = good.copy()
    unwritten.flat[17] = np.nan
    assert compare(unwritten, ref, dtype)["unwritten"] == 1 and not compare(unwritten, ref, dtype)["passed"]
    wrong = good.copy()
    wrong.flat[-1] = -wrong.flat[-1] + 0.25  # one element with a wrong angle
    assert compare(wrong, ref, dtype)["over_bound"] >= 1 and not compare(wrong, ref, dtype)["passed"]
    unrotated = from_bits(to_bits(x, dtype), dtype)
    assert not compare(unrotated, ref, dtype)["passed"]


def test_bf16_bits_round_to_nearest_even():
    # ties: 1 + 2^-8 lies between 1 and 1 + 2^-7 (-> 1, even); 1 + 3 * 2^-8 between 1 + 2^-7 and 1 + 2^-6 (-> even)
    x = np.array([1.0, 1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8, 1.0 + 2.0**-8 + 2.0**-12, -2.5], dtype=np.float32)
    got = from_bits(to_bits(x, "bf16"), "bf16")
    np.testing.assert_array_equal(got, np.array([1.0, 1.0, 1.0 + 2.0**-6, 1.0 + 2.0**-7, -2.5], dtype=np.float32))


def test_every_variant_has_a_case():
    from videorope_trt import rope

    names = {c.variant for c in cases() if c.variant}
    assert names == {v.name for v in rope.VARIANTS.values()}
