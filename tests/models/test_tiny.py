"""The tiny checkpoint: deterministic bytes, the real HF layout, loadable by transformers' own classes, a real
tokenizer with Qwen2-VL's special tokens and chat template, and an atomic write."""

import hashlib
import json

import pytest

from videorope_trt.cli import main
from videorope_trt.models import TinySpec, make_tiny
from videorope_trt.models.tokenizer import SPECIAL_TOKENS

FILES = {
    "config.json", "generation_config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
    "model.safetensors.index.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
}


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_layout_and_determinism(tiny_ckpt, tmp_path):
    assert {p.name for p in tiny_ckpt.iterdir()} == FILES
    again = make_tiny(tmp_path / "again", seed=0)
    assert _digests(again) == _digests(tiny_ckpt)
    other = _digests(make_tiny(tmp_path / "other", seed=1))
    assert other["tokenizer.json"] == _digests(tiny_ckpt)["tokenizer.json"]
    assert other["model-00002-of-00002.safetensors"] != _digests(tiny_ckpt)["model-00002-of-00002.safetensors"]


def test_config_sizes(tiny_ckpt):
    cfg = json.loads((tiny_ckpt / "config.json").read_text())
    assert cfg["model_type"] == "qwen2_vl"
    assert cfg["hidden_size"] // cfg["num_attention_heads"] == 64  # head_dim 64: every allocation rule fits
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"]) == (4, 2)
    assert cfg["rope_scaling"]["mrope_section"] == [8, 12, 12]
    assert cfg["videorope_trt"] == {"variant": "videorope", "delta": 2.0}
    index = json.loads((tiny_ckpt / "model.safetensors.index.json").read_text())
    shards = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
    assert set(index["weight_map"].values()) == FILES & shards


def test_loads_with_stock_transformers_classes(tiny_ckpt):
    from transformers import AutoTokenizer, Qwen2VLForConditionalGeneration

    model, info = Qwen2VLForConditionalGeneration.from_pretrained(tiny_ckpt, use_safetensors=True,
                                                                  output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    tok = AutoTokenizer.from_pretrained(tiny_ckpt)
    assert len(tok) == model.config.text_config.vocab_size
    cfg = model.config
    for token, field in [("<|image_pad|>", "image_token_id"), ("<|video_pad|>", "video_token_id"),
                         ("<|vision_start|>", "vision_start_token_id"), ("<|vision_end|>", "vision_end_token_id")]:
        assert tok.convert_tokens_to_ids(token) == getattr(cfg, field)
    ids = [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    assert ids == list(range(len(tok) - len(SPECIAL_TOKENS), len(tok)))  # after the BPE vocabulary, in order


def test_tokenizer_round_trip_and_chat_template(tiny_ckpt):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_ckpt)
    text = "The red circle moves 12 frames to the right.<|im_end|>"
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text and ids[-1] == tok.convert_tokens_to_ids("<|im_end|>")
    assert len(ids) < len(text) / 2  # BPE merges learned from the corpus
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moves?"}]}]
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                      "<|vision_start|><|video_pad|><|vision_end|>What moves?<|im_end|>\n<|im_start|>assistant\n")


def test_preprocessor_config(tiny_ckpt):
    pre = json.loads((tiny_ckpt / "preprocessor_config.json").read_text())
    spec = TinySpec()
    assert (pre["patch_size"], pre["temporal_patch_size"], pre["merge_size"]) == (14, 2, 2)
    assert (pre["min_pixels"], pre["max_pixels"]) == (spec.min_pixels, spec.max_pixels)
    assert len(pre["image_mean"]) == len(pre["image_std"]) == 3


def test_refuses_a_non_empty_folder(tiny_ckpt):
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        make_tiny(tiny_ckpt)


def test_failure_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        make_tiny(tmp_path / "bad", spec=TinySpec(num_attention_heads=3))  # 256 is not divisible by 3
    assert list(tmp_path.iterdir()) == []


def test_make_tiny_command(tmp_path, capsys):
    assert main(["make-tiny", str(tmp_path / "v"), "--variant", "vrope"]) == 0
    assert json.loads((tmp_path / "v" / "config.json").read_text())["videorope_trt"] == {"variant": "vrope"}
    assert main(["make-tiny", str(tmp_path / "w"), "--variant", "videorope", "--delta", "3"]) == 0
    config = json.loads((tmp_path / "w" / "config.json").read_text())
    assert config["videorope_trt"] == {"variant": "videorope", "delta": 3.0}
    assert main(["make-tiny", str(tmp_path / "x"), "--variant", "nope"]) == 2
    assert "unknown RoPE variant 'nope'" in capsys.readouterr().err
    assert main(["make-tiny", str(tmp_path / "y"), "--variant", "m_rope", "--delta", "3"]) == 2
    assert "has no temporal spacing" in capsys.readouterr().err
    assert main(["make-tiny", str(tmp_path / "z"), "--rope-params", "[1]"]) == 2
    assert "--rope-params must be a JSON object" in capsys.readouterr().err
    assert not any((tmp_path / n).exists() for n in "xyz")
