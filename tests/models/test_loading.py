"""Checkpoint loading: the RoPE choice (argument > config field > m_rope), saving records it, and every broken
checkpoint gives an error naming what was received and what was expected."""

import json
import shutil

import pytest
import torch

from videorope_trt.models import load_model, load_tokenizer, save_model
from videorope_trt.models.rope_settings import resolve_rope_choice

from _model_inputs import build, image_video_prompt, rel_err


@pytest.fixture
def broken(tiny_ckpt, tmp_path):
    """A writable copy of the tiny checkpoint to damage."""
    return shutil.copytree(tiny_ckpt, tmp_path / "ckpt")


def _edit_config(ckpt, **changes):
    path = ckpt / "config.json"
    cfg = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    path.write_text(json.dumps(cfg))


def test_rope_choice_precedence():
    field = {"variant": "videorope", "delta": 3.0, "theta": 1e6, "head_dim": 64, "axis_map": [0]}
    assert resolve_rope_choice(field, None, None) == ("videorope", {"delta": 3.0})
    assert resolve_rope_choice(field, None, {"delta": 1.5}) == ("videorope", {"delta": 1.5})
    assert resolve_rope_choice(field, "m_rope", None) == ("m_rope", {})  # the field's delta is not m_rope's
    assert resolve_rope_choice(None, None, None) == ("m_rope", {})


def test_variant_from_config_field_and_argument(load_tiny):
    default = load_tiny()  # the tiny checkpoint records VideoRoPE with delta 2
    assert (default.rope.variant, default.rope.params) == ("videorope", {"delta": 2.0})
    assert default.rope.axis_map.tolist()[-8:] == [0] * 8  # LTA: the lowest 8 of 32 frequencies → t
    m = load_tiny("m_rope")
    assert m.rope.axis_map.tolist() == [0] * 8 + [1] * 12 + [2] * 12  # mrope_section [8, 12, 12]
    expected = 1.0 / 1e6 ** (torch.arange(32, dtype=torch.float64) / 32)
    assert torch.allclose(m.rope.inv_freq.double(), expected, rtol=1e-6)
    assert load_tiny("t_scale2_change_freq").rope.variant == "videorope"  # alias resolved


def test_save_records_the_rope_and_round_trips(load_tiny, tiny_ckpt, tmp_path):
    model = load_tiny("videorope", delta=3.0)
    out = save_model(model, tmp_path / "saved", copy_from=tiny_ckpt)
    field = json.loads((out / "config.json").read_text())["videorope_trt"]
    assert field["variant"] == "videorope" and field["delta"] == 3.0 and field["head_dim"] == 64
    again = load_model(out)
    assert (again.rope.variant, again.rope.params) == ("videorope", {"delta": 3.0})
    assert (out / "tokenizer.json").is_file()
    ids, inputs, _ = build(model.config, image_video_prompt(model.config))
    with torch.no_grad():
        assert rel_err(again(ids, **inputs)[0], model(ids, **inputs)[0]) <= 1e-6


def test_tokenizer_loads(tiny_ckpt):
    tok = load_tokenizer(tiny_ckpt)
    config = json.loads((tiny_ckpt / "config.json").read_text())
    assert tok.convert_tokens_to_ids("<|video_pad|>") == config["video_token_id"]


def test_unknown_variant(tiny_ckpt):
    with pytest.raises(ValueError, match=r"unknown RoPE variant 'nope'.*known variants: .*videorope"):
        load_model(tiny_ckpt, variant="nope")


def test_not_a_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        load_model(tmp_path / "absent")


def test_missing_config(broken):
    (broken / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        load_model(broken)


def test_not_qwen2vl(broken):
    _edit_config(broken, model_type="llama", architectures=["LlamaForCausalLM"])
    with pytest.raises(ValueError, match=r"model_type='llama'.*expected a Qwen2-VL config"):
        load_model(broken)


def test_missing_shard(broken):
    (broken / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"names shard\(s\) \['model-00002-of-00002.safetensors'\]"):
        load_model(broken)


def test_pickle_weights_are_refused(broken):
    for p in broken.glob("model*"):
        p.unlink()
    (broken / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(FileNotFoundError, match=r"no weights.*pytorch_model.bin.*never loaded"):
        load_model(broken)


def test_wrong_shape(broken):
    from safetensors.numpy import load_file, save_file

    shard = broken / "model-00002-of-00002.safetensors"
    tensors = load_file(str(shard))
    name = "model.language_model.layers.0.self_attn.q_proj.weight"
    tensors[name] = tensors[name][:128]  # 256 → 128 output rows
    save_file(tensors, str(shard), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"does not (match|fit) its config.json.*q_proj"):
        load_model(broken, variant="m_rope")


def test_missing_tensor(broken):
    from safetensors.numpy import load_file, save_file

    shard = broken / "model-00002-of-00002.safetensors"
    tensors = load_file(str(shard))
    del tensors["model.language_model.norm.weight"]
    save_file(tensors, str(shard), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"missing tensors.*language_model.norm.weight"):
        load_model(broken, variant="m_rope")


def test_missing_tokenizer(broken):
    (broken / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"tokenizer file\(s\) \['tokenizer.json'\] missing"):
        load_tokenizer(broken)


def test_placeholder_count_mismatch(load_tiny):
    model = load_tiny("m_rope")
    ids, inputs, _ = build(model.config, image_video_prompt(model.config))
    ids = ids[:, 1:]  # fine; now drop one video placeholder token
    drop = int((ids[0] == model.config.video_token_id).nonzero()[0])
    ids = torch.cat([ids[:, :drop], ids[:, drop + 1:]], dim=1)
    with pytest.raises(ValueError, match=r"11 video placeholder tokens but the video grids \[\[2, 4, 6\]\] give 12"):
        model.embed(ids, **inputs)


def test_right_padding_is_refused(load_tiny):
    model = load_tiny("m_rope")
    ids = torch.tensor([[5, 6, 7, 0]])
    with pytest.raises(ValueError, match="must be left padded"):
        model.positions(ids, attention_mask=torch.tensor([[1, 1, 1, 0]]))


def test_decoder_shape_errors(load_tiny):
    model = load_tiny("m_rope")
    embeds = torch.zeros(1, 4, model.config.text_config.hidden_size)
    with pytest.raises(ValueError, match=r"positions must be \(A, 1, 4\).*got \(3, 1, 5\)"):
        model.decoder(embeds, torch.zeros(3, 1, 5), torch.ones(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"attention_mask must be \(B, P\+S\) = \(1, 4\)"):
        model.decoder(embeds, torch.zeros(3, 1, 4), torch.ones(1, 6, dtype=torch.long))
