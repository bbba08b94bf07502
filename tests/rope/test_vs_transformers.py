"""`m_rope` / `qwen25_mrope` / `qwen3_mrope` against transformers' own Qwen2-VL / Qwen2.5-VL / Qwen3-VL
`get_rope_index`, and `segments_from_tokens` against the processor's layout.

transformers 5.3 and later start the text after a vision block at s + max(h, w) (they leave out the t extent;
huggingface/transformers issue 45381), while the Qwen2-VL / Qwen2.5-VL reference code, transformers up to 5.2 and
the checkpoints use the block's max position + 1 (docs/facts.md). The two agree whenever the block's t extent is
not the largest, so the random layouts here keep to that case; `test_long_video_follows_reference_rule` pins the
reference rule where they differ, and `test_transformers_text_after_a_long_video_is_not_the_reference_rule` holds
the installed transformers to the difference docs/facts.md describes.
"""

import functools
import types

import numpy as np
import pytest
import torch
import transformers.models.qwen2_5_vl.modeling_qwen2_5_vl as qwen25_vl
import transformers.models.qwen2_vl.modeling_qwen2_vl as qwen2_vl
from transformers import Qwen2_5_VLConfig, Qwen2VLConfig

from videorope_trt.rope import batch_positions, position_ids, segments_from_tokens

IMG, VID, TXT, PAD, MERGE, TPS = 151655, 151656, 100, 0, 2, 2


def _hf_method(model_cls, config):
    """The real `get_rope_index`, bound to a stand-in holding only what it reads (config, vision ids)."""
    fake = types.SimpleNamespace(config=config)
    fake.get_vision_position_ids = functools.partial(model_cls.get_vision_position_ids, fake)
    return functools.partial(model_cls.get_rope_index, fake)


def _random_sample(rng, fps_choices, max_items=3):
    """Token ids, mm types, image / video grids (patches), per-video fps, for one sample."""
    ids, types_, images, videos, fps = [], [], [], [], []
    for _ in range(rng.integers(1, max_items + 1)):
        ids += [TXT] * int(rng.integers(1, 5))
        types_ += [0] * (len(ids) - len(types_))
        h, w = (int(x) for x in rng.integers(1, 5, size=2))
        if rng.random() < 0.4:
            images.append((1, MERGE * h, MERGE * w))
            ids += [IMG] * (h * w)
            types_ += [1] * (h * w)
            continue
        f = float(rng.choice(fps_choices))
        t_max = max(h, w)  # keep the t extent within max(h, w): see the module docstring
        interval = np.float32(TPS) * np.float32(2 / f)
        t = int(max(k for k in range(1, t_max + 1) if np.floor(np.float32(k - 1) * interval) <= t_max - 1))
        t = int(rng.integers(1, t + 1))
        videos.append((t, MERGE * h, MERGE * w))
        fps.append(f)
        ids += [VID] * (t * h * w)
        types_ += [2] * (t * h * w)
    ids += [TXT] * int(rng.integers(0, 4))
    types_ += [0] * (len(ids) - len(types_))
    return ids, types_, images, videos, fps


def _batch(rng, b, fps_choices):
    samples = [_random_sample(rng, fps_choices) for _ in range(b)]
    length = max(len(s[0]) for s in samples)
    ids = np.full((b, length), PAD)
    types_ = np.zeros((b, length), dtype=np.int64)
    mask = np.zeros((b, length), dtype=np.int64)
    for k, (i, t, *_rest) in enumerate(samples):
        ids[k, length - len(i):], types_[k, length - len(i):], mask[k, length - len(i):] = i, t, 1
    return samples, ids, types_, mask


def _grid_tensor(grids):
    return torch.tensor(grids, dtype=torch.long) if grids else None


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("variant", ["m_rope", "qwen25_mrope"])
def test_matches_transformers(variant, seed):
    rng = np.random.default_rng(seed)
    fps_choices = [2.0] if variant == "m_rope" else [2.0, 1.0, 0.5, 3.0, 4.0, 0.25]
    samples, ids, types_, mask = _batch(rng, int(rng.integers(1, 4)), fps_choices)
    images = [g for s in samples for g in s[2]]
    videos = [g for s in samples for g in s[3]]
    fps = [f for s in samples for f in s[4]]
    kwargs = dict(input_ids=torch.tensor(ids), mm_token_type_ids=torch.tensor(types_),
                  image_grid_thw=_grid_tensor(images), video_grid_thw=_grid_tensor(videos),
                  attention_mask=torch.tensor(mask))
    if variant == "m_rope":
        hf = _hf_method(qwen2_vl.Qwen2VLModel, Qwen2VLConfig())
    else:
        config = Qwen2_5_VLConfig()
        config.vision_config.tokens_per_second = TPS
        hf = _hf_method(qwen25_vl.Qwen2_5_VLModel, config)
        kwargs["second_per_grid_ts"] = torch.tensor([2 / f for f in fps], dtype=torch.float32)
    want_pos, want_deltas = hf(**kwargs)

    segs = [segments_from_tokens(ids[k], _grid_tensor(s[2]), _grid_tensor(s[3]), image_token_id=IMG,
                                 video_token_id=VID, attention_mask=mask[k]) for k, s in enumerate(samples)]
    bp = batch_positions(variant, segs, fps=[s[4] for s in samples], tokens_per_second=TPS)
    np.testing.assert_array_equal(bp.positions, want_pos.numpy().astype(np.float32))
    np.testing.assert_array_equal(bp.attention_mask, mask)
    # transformers counts decode positions from the unpadded length; ours from the padded one
    pads = (mask == 0).sum(axis=1)
    np.testing.assert_array_equal(bp.rope_deltas, want_deltas.numpy().reshape(-1) - pads)


def test_long_video_follows_reference_rule():
    """T > max(h, w): the text after starts at the block's max + 1 (s + T), as Qwen2-VL's reference code."""
    got = position_ids("m_rope", [("text", 2), ("video", 5, 1, 2), ("text", 2)])
    np.testing.assert_array_equal(got[:, -2:], [[7, 8]] * 3)
    got = position_ids("qwen25_mrope", [("text", 2), ("video", 2, 1, 1), ("text", 1)], fps=0.5)
    np.testing.assert_array_equal(got[:, -1], [11, 11, 11])  # t of slice 1 = 2 + 8; next = 11


def test_transformers_text_after_a_long_video_is_not_the_reference_rule():
    """2 text tokens, a video of T = 5 slices of 1 x 2 merged tokens, 2 text tokens. The video's own positions are
    the same under both rules (t of the last slice: 2 + 4 = 6); the text after it starts at s + max(h, w) = 4 in
    transformers (5.3 and later), below that 6, and at the block's max + 1 = s + T = 7 here. Decoding continues at
    the largest position + 1 in both: 7 there (the video's 6 + 1, the text having stayed below it), 9 here. A
    transformers that returns to the reference rule fails this test: then README.md and docs/facts.md change."""
    ids = [TXT] * 2 + [VID] * 10 + [TXT] * 2
    types_ = [0] * 2 + [2] * 10 + [0] * 2
    hf = _hf_method(qwen2_vl.Qwen2VLModel, Qwen2VLConfig())
    theirs, their_deltas = hf(input_ids=torch.tensor([ids]), mm_token_type_ids=torch.tensor([types_]),
                              video_grid_thw=torch.tensor([[5, 2, 4]]))
    ours = batch_positions("m_rope", [[("text", 2), ("video", 5, 1, 2), ("text", 2)]])
    np.testing.assert_array_equal(ours.positions[:, 0, :12], theirs.numpy()[:, 0, :12])  # text before + video
    np.testing.assert_array_equal(theirs.numpy()[:, 0, 12:], [[4, 5]] * 3)  # s + max(h, w)
    np.testing.assert_array_equal(ours.positions[:, 0, 12:], [[7, 8]] * 3)  # s + max(T, h, w)
    assert int(their_deltas.reshape(-1)[0]) == 7 - 14  # the first generated token at 7
    assert float(ours.rope_deltas[0]) == 9 - 14  # at 9


def test_segments_from_tokens_layout():
    ids = [TXT, TXT] + [IMG] * 6 + [TXT] + [VID] * 6 + [TXT]
    segs = segments_from_tokens(ids, [[1, 4, 6]], [[3, 2, 4]], image_token_id=IMG, video_token_id=VID)
    assert segs == [("text", 2), ("image", 2, 3), ("text", 1), ("video", 3, 1, 2), ("text", 1)]


def test_segments_from_tokens_back_to_back_images():
    segs = segments_from_tokens([IMG] * 3, [[1, 2, 2], [1, 2, 4]], image_token_id=IMG, video_token_id=VID)
    assert segs == [("image", 1, 1), ("image", 1, 2)]


@pytest.mark.parametrize("ids,images,match", [
    ([TXT, IMG, IMG], [[1, 2, 2]], "needs 1 tokens, the run has 2|more image tokens"),
    ([TXT, IMG], [[1, 2, 2], [1, 2, 2]], "has 2 grid"),
    ([TXT, IMG], [[1, 3, 2]], "not divisible"),
    ([TXT, IMG], None, "more image tokens"),
    ([], None, "non-empty"),
])
def test_segments_from_tokens_errors(ids, images, match):
    with pytest.raises(ValueError, match=match):
        segments_from_tokens(ids, images, image_token_id=IMG, video_token_id=VID)


@pytest.mark.parametrize("seed", range(6))
def test_qwen3_matches_transformers(seed):
    """Qwen3-VL: timestamp text between slices; our segments take one t=1 grid per slice (repeated grids)."""
    import transformers.models.qwen3_vl.modeling_qwen3_vl as qwen3_vl
    from transformers import Qwen3VLConfig

    rng = np.random.default_rng(100 + seed)
    ids, images, videos = [TXT] * int(rng.integers(1, 4)), [], []
    for _ in range(int(rng.integers(1, 3))):
        t, h, w = (int(x) for x in rng.integers(1, 4, size=3))
        videos.append((t, MERGE * h, MERGE * w))
        for _f in range(t):  # "<x.x seconds>" <|vision_start|> frame <|vision_end|>
            ids += [TXT] * int(rng.integers(2, 4)) + [VID] * (h * w) + [TXT]
        if rng.random() < 0.5:
            images.append((1, MERGE * w, MERGE * h))
            ids += [TXT] + [IMG] * (h * w) + [TXT]
    ids += [TXT] * int(rng.integers(0, 3))
    types_ = [1 if i == IMG else 2 if i == VID else 0 for i in ids]
    hf = _hf_method(qwen3_vl.Qwen3VLModel, Qwen3VLConfig())
    want, want_deltas = hf(input_ids=torch.tensor([ids]), mm_token_type_ids=torch.tensor([types_]),
                           image_grid_thw=_grid_tensor(images), video_grid_thw=_grid_tensor(videos))
    per_slice = [(1, h, w) for t, h, w in videos for _ in range(t)]
    segs = segments_from_tokens(ids, _grid_tensor(images), _grid_tensor(per_slice), image_token_id=IMG,
                                video_token_id=VID)
    bp = batch_positions("qwen3_mrope", [segs])
    np.testing.assert_array_equal(bp.positions, want.numpy().astype(np.float32))
    np.testing.assert_array_equal(bp.rope_deltas, want_deltas.numpy().reshape(-1))
