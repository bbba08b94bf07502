"""Our decoder against obviously-right references.

- m_rope: transformers' stock Qwen2VLForConditionalGeneration forward (its own positions and rotation).
- any variant: the stock decoder layers fed cos/sin from `rope.rotary_tables` (positions from `rope.position_ids`
  on the explicit layout), so neither our decoder forward, our op nor our token→layout parsing is involved.
- padded batches equal single samples; prefill + decode with explicit past equals one full forward.
"""

import pytest
import torch

from videorope_trt import rope

from _model_inputs import build, image_video_prompt, mm_token_type_ids, rel_err, vision

TOL = 1e-5  # fp32 relative error (issue: <= 1e-5)
VARIANTS = ["m_rope", "videorope", "vrope", "tad_rope", "videorope_pp"]


def _stock_logits(model, ids, inputs):
    with torch.no_grad():
        out = model.hf(input_ids=ids, mm_token_type_ids=mm_token_type_ids(model.config, ids), **inputs)
    return out.logits


def _table_logits(model, embeds, segs):
    """Stock layers + norm + lm_head with cos/sin from rotary_tables: the slow, obviously-right decoder."""
    r = model.rope
    pos = rope.position_ids(r.variant, segs, **r.position_params)
    cos, sin = rope.rotary_tables(r.variant, pos, r.head_dim, r.theta, **r.frequency_params)
    cos, sin = torch.from_numpy(cos)[None], torch.from_numpy(sin)[None]
    h = embeds
    with torch.no_grad():
        for layer in model.text_model.layers:  # attention_mask=None: causal sdpa over one unpadded sample
            h = layer(h, attention_mask=None, position_embeddings=(cos, sin))
        return model.hf.lm_head(model.text_model.norm(h))


@pytest.mark.parametrize("prompt", ["image", "video", "image+video"])
def test_m_rope_matches_stock_qwen2vl(load_tiny, prompt):
    model = load_tiny("m_rope")
    cfg = model.config
    # Videos have T <= max(H, W) merged: transformers 5.x places the text after a video at s + max(H, W),
    # which equals Qwen2-VL's s + max(T, H, W) only then.
    parts = {
        "image": [("text", [5, 6])] + vision(cfg, ("image", (1, 6, 4))) + [("text", [7, 8, 9])],
        "video": [("text", [5])] + vision(cfg, ("video", (3, 6, 8))) + [("text", [7, 8, 9])],
        "image+video": image_video_prompt(cfg),
    }[prompt]
    ids, inputs, _ = build(cfg, parts)
    ref = _stock_logits(model, ids, inputs)
    with torch.no_grad():
        ours, _ = model(ids, **inputs)
    assert ours.shape == ref.shape == (1, ids.shape[1], cfg.text_config.vocab_size)
    assert rel_err(ours, ref) <= TOL


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_matches_rotary_tables_reference(load_tiny, variant):
    model = load_tiny(variant)
    ids, inputs, segs = build(model.config, image_video_prompt(model.config))
    with torch.no_grad():
        embeds = model.embed(ids, **inputs)
        ours, _ = model(ids, **inputs)
    ref = _table_logits(model, embeds, segs)
    assert rel_err(ours, ref) <= TOL


def test_videorope_delta_changes_logits(load_tiny):
    # The rotation must actually matter: a different ATS spacing gives visibly different logits.
    a, b = load_tiny("videorope"), load_tiny("videorope", delta=3.0)
    ids, inputs, _ = build(a.config, image_video_prompt(a.config))
    with torch.no_grad():
        la, lb = a(ids, **inputs)[0], b(ids, **inputs)[0]
    assert rel_err(la, lb) > 1e-3


def _two_samples(cfg):
    long_ids, long_in, _ = build(cfg, image_video_prompt(cfg), seed=1)
    short = [("text", [4, 5])] + vision(cfg, ("video", (2, 4, 4))) + [("text", [6])]
    short_ids, short_in, _ = build(cfg, short, seed=2)
    return (long_ids, long_in), (short_ids, short_in)


def _pad_batch(cfg, samples):
    """Left-pad token ids; concatenate the vision inputs in sample order."""
    length = max(ids.shape[1] for ids, _ in samples)
    pad = cfg.text_config.bos_token_id
    ids = torch.stack([torch.cat([torch.full((length - i.shape[1],), pad), i[0]]) for i, _ in samples])
    mask = torch.stack([torch.cat([torch.zeros(length - i.shape[1]), torch.ones(i.shape[1])]).long()
                        for i, _ in samples])
    inputs = {}
    for key in ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw"):
        parts = [s[key] for _, s in samples if key in s]
        if parts:
            inputs[key] = torch.cat(parts)
    return ids, mask, inputs


@pytest.mark.parametrize("variant", ["m_rope", "videorope", "tad_rope"])
def test_padded_batch_equals_single_samples(load_tiny, variant):
    model = load_tiny(variant)
    samples = _two_samples(model.config)
    ids, mask, inputs = _pad_batch(model.config, samples)
    with torch.no_grad():
        batch, _ = model(ids, attention_mask=mask, **inputs)
        for b, (sid, sin) in enumerate(samples):
            single, _ = model(sid, **sin)
            assert rel_err(batch[b, -sid.shape[1]:], single[0]) <= TOL


@pytest.mark.parametrize("variant", ["m_rope", "videorope", "tad_rope", "vrope"])
def test_prefill_then_decode_equals_full_forward(load_tiny, variant):
    model = load_tiny(variant)
    cfg = model.config
    ids, mask, inputs = _pad_batch(cfg, _two_samples(cfg))
    tail = torch.tensor([[21, 22, 23], [31, 32, 33]])
    full_ids = torch.cat([ids, tail], dim=1)
    full_mask = torch.cat([mask, torch.ones_like(tail)], dim=1)
    with torch.no_grad():
        full, _ = model(full_ids, attention_mask=full_mask, **inputs)
        prefill, past = model(ids, attention_mask=mask, **inputs)
        real = mask.bool()  # padding rows attend to nothing real; their logits carry no meaning
        assert rel_err(prefill[real], full[:, : ids.shape[1]][real]) <= TOL
        deltas = model.positions(ids, inputs.get("image_grid_thw"), inputs.get("video_grid_thw"), mask).rope_deltas
        length = ids.shape[1]
        for k in range(tail.shape[1]):
            pos = torch.as_tensor(rope.decode_positions(variant, deltas, [length + k]))
            step, past = model.decoder(model.text_model.embed_tokens(tail[:, k : k + 1]), pos,
                                       full_mask[:, : length + k + 1], past)
            assert past[0][0].shape == (2, cfg.text_config.num_key_value_heads, length + k + 1, model.rope.head_dim)
            assert rel_err(step[:, 0], full[:, length + k]) <= TOL


def test_generate_equals_full_forward_argmax_loop(load_tiny):
    from videorope_trt.models import greedy_generate

    model = load_tiny("videorope")
    ids, inputs, _ = build(model.config, image_video_prompt(model.config))
    got = greedy_generate(model, ids, max_new_tokens=5, eos_token_id=[], **inputs)
    seq = ids
    with torch.no_grad():
        for _ in range(5):  # the slow way: a full forward over the whole sequence for every token
            logits, _ = model(seq, **inputs)
            seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert got.tolist() == seq[:, ids.shape[1]:].tolist()


def test_generate_stops_at_eos(load_tiny):
    from videorope_trt.models import greedy_generate

    model = load_tiny("videorope")
    ids, inputs, _ = build(model.config, image_video_prompt(model.config))
    first = greedy_generate(model, ids, max_new_tokens=1, eos_token_id=[], **inputs)
    out = greedy_generate(model, ids, max_new_tokens=6, eos_token_id=int(first[0, 0]), **inputs)
    assert out.tolist() == first.tolist()  # the first token is the end token: one token, then stop


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 5e-3), (torch.bfloat16, 2e-2)])
def test_half_precision_close_to_fp32(tiny_ckpt, load_tiny, dtype, tol):
    from videorope_trt.models import load_model

    ref_model = load_tiny()
    half = load_model(tiny_ckpt, dtype=dtype)
    ids, inputs, _ = build(ref_model.config, image_video_prompt(ref_model.config))
    with torch.no_grad():
        ref, got = ref_model(ids, **inputs)[0], half(ids, **inputs)[0]
    assert got.dtype == dtype
    assert rel_err(got.float(), ref) <= tol
