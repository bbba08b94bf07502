"""The VideoRopeCache driver's checks can fail: from outputs built by the reference (what a correct plugin returns),
a stray write into an untouched row, a row left unwritten, a wrong value bit, a wrong key and a wrong aliasing answer
are each caught. The cases cover what the GPU run must cover. No GPU or compiler needed."""

from __future__ import annotations

import numpy as np
import pytest

from videorope_trt.plugins.driver import run_cache as R
from videorope_trt.plugins.driver.numerics import to_bits
from videorope_trt.plugins.reference import VideoRopeCache
from videorope_trt.rope.contract import RotaryAttrs


def plugin_like(case, inputs):
    """(q_rot, k_cache, v_cache) bits as a correct plugin returns them: the reference rounded to the dtype, written
    into the poisoned caches at the contract's rows."""
    attrs = RotaryAttrs(case.interleaved, case.layout, case.scale)
    f64 = {n: inputs[n].astype(np.float64) for n in ("q", "k", "v")}
    zeros = np.zeros(case.cache_shape)
    q, k, v = VideoRopeCache(f64["q"], f64["k"], f64["v"], inputs["positions"], inputs["inv_freq"], inputs["axis_map"],
                             zeros, zeros, inputs["write_offset"], attrs)
    rows = R.written_rows(case)
    caches = []
    for ref, poisoned in ((k, inputs["k_cache"]), (v, inputs["v_cache"])):
        bits = poisoned.copy().transpose(0, 2, 1, 3)  # (B, C, KV, D) view
        bits[rows] = R.raw(to_bits(ref.astype(np.float32), case.dtype), case.dtype).transpose(0, 2, 1, 3)[rows]
        caches.append(np.ascontiguousarray(bits.transpose(0, 2, 1, 3)))
    return (R.raw(to_bits(q.astype(np.float32), case.dtype), case.dtype), *caches)


@pytest.mark.parametrize("name", ["cache-both-ends", "cache-grid-fp16-l1-i1", "cache-grid-bf16-l0-i0",
                                  "cache-odd-d7-partial", "cache-decode-s1"])
def test_checks_accept_a_correct_plugin_and_catch_faults(name):
    case = next(c for c in R.cases() if c.name == name)
    inputs = R.make_inputs(case)
    q, k, v = plugin_like(case, inputs)
    assert R.check_outputs(case, inputs, q, k, v)["passed"]
    rows = R.written_rows(case)
    b, row = np.argwhere(rows)[0]
    ub, urow = np.argwhere(~rows)[0]
    faults = {
        "stray write": lambda q, k, v: k.__setitem__((ub, 0, urow, 0), 0),
        "row left unwritten": lambda q, k, v: v.__setitem__((b, 0, row), R.POISON[case.dtype]),
        "one value bit": lambda q, k, v: v.__setitem__((b, 0, row, 0), v[b, 0, row, 0] ^ 1),
        "wrong key": lambda q, k, v: k.__setitem__((b, 0, row), k[b, 0, (row + 1) % case.capacity]),
        "q unrotated": lambda q, k, v: q.__setitem__(..., R.raw(to_bits(inputs["q"], case.dtype), case.dtype)),
    }
    for what, fault in faults.items():
        bad = [a.copy() for a in (q, k, v)]
        fault(*bad)
        assert not R.check_outputs(case, inputs, *bad)["passed"], what


def test_a_wrong_aliasing_answer_fails_the_case(monkeypatch):
    case = next(c for c in R.cases() if c.name == "cache-both-ends")
    inputs = R.make_inputs(case)
    monkeypatch.setattr(R, "make_inputs", lambda c: inputs)
    monkeypatch.setattr(R, "run_cache", lambda *a: (*plugin_like(case, inputs), (-1, 7, 6)))
    assert not R.run_case(None, None, case)["passed"]
    monkeypatch.setattr(R, "run_cache", lambda *a: (*plugin_like(case, inputs), (-1, 6, 7)))
    assert R.run_case(None, None, case)["passed"]


def test_cases_cover_the_contract():
    from videorope_trt import rope

    cs = R.cases()
    assert {c.variant for c in cs if c.variant} == {v.name for v in rope.VARIANTS.values()}
    assert {(c.dtype, c.layout, c.interleaved) for c in cs} >= {(d, lay, i) for d in ("fp32", "fp16", "bf16")
                                                                  for lay in (0, 1) for i in (0, 1)}
    assert any(c.seq == 1 for c in cs) and any(c.seq >= 4096 for c in cs)
    assert any(c.freq < c.head_dim // 2 for c in cs) and any(c.head_dim % 2 for c in cs)
    assert any(len(set(c.offsets)) > 1 and min(c.offsets) > 0 for c in cs)  # nonzero, per-sequence offsets
    assert any(min(c.offsets) < 0 for c in cs) and any(max(c.offsets) + c.seq > c.capacity for c in cs)
    assert any(not c.aliased for c in cs)
    for c in cs:  # every case writes rows, so the checks of written rows always run
        assert R.written_rows(c).any(), c.name
