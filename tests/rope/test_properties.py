"""Property tests of the index rules over random layouts, and the error cases."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from videorope_trt.rope import VARIANTS, batch_positions, decode_positions, get_variant, position_ids
from videorope_trt.rope.segments import parse_segments

NAMES = sorted({v.name for v in VARIANTS.values()})
DIAGONAL = ["videorope", "videorope_pp", "ttxy_rope", "m_modify_rope", "m_modify_margin_rope", "pos_only"]

small = st.integers(1, 4)
text = st.tuples(st.just("text"), small)
image = st.tuples(st.just("image"), small, small)
video = st.tuples(st.just("video"), st.integers(1, 3), small, small)
layouts = st.lists(st.one_of(text, image, video), min_size=1, max_size=4)
image_layouts = st.lists(st.one_of(text, image), min_size=1, max_size=4)


def _layout_ok(name, segs):
    return name != "rope_tie" or all(s[0] != "video" for s in segs)


def _spans(segs):
    """(segment, start index) of every segment in token order."""
    out, at = [], 0
    for seg in parse_segments(segs):
        out.append((seg, at))
        at += seg.n
    return out


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(NAMES), layouts, st.floats(0.25, 3.0))
def test_text_continuation(name, segs, delta):
    """Text runs advance by the decode step, equal on every row; and a following run picks up the pattern."""
    if not _layout_ok(name, segs):
        return
    kw = {"delta": delta} if get_variant(name).default_delta is not None else {}
    pos = position_ids(name, segs, **kw)
    step = get_variant(name).decode_step
    for seg, at in _spans(segs):
        if seg.kind == "text":
            block = pos[:, at:at + seg.n]
            assert (block == block[:1]).all()
            np.testing.assert_allclose(np.diff(block[0]), step, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(DIAGONAL), layouts, st.floats(0.25, 3.0))
def test_diagonal_centring(name, segs, delta):
    """h - t and w - t run over [-⌊(n-1)/2⌋, ⌈(n-1)/2⌉]: the frame centre sits on the diagonal."""
    pos = position_ids(name, segs, delta=delta)
    for seg, at in _spans(segs):
        if seg.kind == "text":
            continue
        t, h, w = pos[:, at:at + seg.n]
        for off, n in ((h - t, seg.h), (w - t, seg.w)):
            np.testing.assert_allclose([off.min(), off.max()], [-((n - 1) // 2), (n - 1) - (n - 1) // 2], atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([n for n in NAMES if n != "vrope"]), layouts)
def test_monotone_time(name, segs):
    """The t row never goes back, and it strictly advances from one frame (or text token) to the next."""
    if not _layout_ok(name, segs):
        return
    t = position_ids(name, segs)[0]
    assert (np.diff(t) >= 0).all()
    for seg, at in _spans(segs):
        if seg.kind == "video" and seg.t > 1:
            per_frame = t[at:at + seg.n].reshape(seg.t, -1)
            assert (per_frame == per_frame[:, :1]).all() or name in ("vanilla_rope", "tad_rope", "rope_tie")
            assert (np.diff(per_frame.min(axis=1)) > 0).all()


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(NAMES), st.lists(layouts, min_size=1, max_size=3), st.integers(1, 3))
def test_decode_continuation(name, batch, extra):
    """Generated tokens sit exactly where appended text tokens would, for every sample of a padded batch."""
    if not all(_layout_ok(name, s) for s in batch):
        return
    bp = batch_positions(name, batch)
    big = bp.positions.shape[-1]
    dec = decode_positions(name, bp.rope_deltas, np.arange(big, big + extra))
    for k, segs in enumerate(batch):
        want = position_ids(name, list(segs) + [("text", extra)])[:, -extra:]
        np.testing.assert_allclose(dec[:, k], want, atol=1e-6)


@pytest.mark.parametrize("segments,match", [
    ([("video", 2, -1, 3)], r"h must be positive, got -1"),
    ([("text", 0)], r"n must be positive, got 0"),
    ([("video", 0, 2, 2)], r"t must be positive, got 0"),
    ([], "segments is empty"),
    ([("audio", 3)], r"expected \('text', n\)"),
    ([("image", 2)], "takes 2 size"),
    ([("text", 2.5)], "whole number"),
])
def test_bad_segments(segments, match):
    with pytest.raises(ValueError, match=match):
        position_ids("videorope", segments)


@pytest.mark.parametrize("kwargs,match", [
    (dict(delta=float("nan")), "delta must be a finite positive number, got nan"),
    (dict(delta=float("inf")), "delta must be a finite positive"),
    (dict(delta=0.0), "delta must be a finite positive"),
    (dict(start=float("inf")), "start must be a finite number"),
])
def test_bad_params(kwargs, match):
    with pytest.raises(ValueError, match=match):
        position_ids("videorope", [("text", 2)], **kwargs)


def test_param_a_variant_does_not_have():
    with pytest.raises(ValueError, match="'m_rope' has no temporal spacing"):
        position_ids("m_rope", [("text", 2)], delta=2.0)
    with pytest.raises(ValueError, match="has no direction order"):
        position_ids("m_rope", [("text", 2)], order="paper")
    with pytest.raises(ValueError, match="order must be one of"):
        position_ids("vrope", [("image", 2, 2)], order="sideways")
    with pytest.raises(ValueError, match="fps has 2 entries but the layout has 1 video"):
        position_ids("qwen25_mrope", [("video", 2, 2, 2)], fps=[1.0, 2.0])
    with pytest.raises(ValueError, match="rope_tie has no video rule"):
        position_ids("rope_tie", [("video", 2, 2, 2)])


def test_unknown_variant_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown RoPE variant 'bogus'; known variants: .*m_rope.*videorope"):
        get_variant("bogus")
    with pytest.raises(ValueError, match="unknown RoPE variant"):
        position_ids("bogus", [("text", 1)])
