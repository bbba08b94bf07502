"""`make_tiny`: a deterministic, random-weight Qwen2-VL checkpoint in the real Hugging Face layout.

    OUT/config.json                          Qwen2VLConfig (small sizes) + the "videorope_trt" rope field
    OUT/model-0000{1,2}-of-00002.safetensors  two shards (vision tower | language model)
    OUT/model.safetensors.index.json         weight map
    OUT/tokenizer.json, tokenizer_config.json  byte-level BPE with Qwen2-VL's special tokens, chat template
    OUT/preprocessor_config.json             Qwen2-VL image processor fields (small pixel budget)
    OUT/generation_config.json

Head dim is 64 (32 frequency pairs) so every frequency-allocation rule of `videorope_trt.rope` has room; the
M-RoPE sections are Qwen2-VL's [16, 24, 24] scaled to D = 64: [8, 12, 12]. Weights come from numpy's PCG64 so
the files are the same bytes on every machine, and are scaled so attention is sharp: a rotary mistake changes
the logits visibly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from videorope_trt.artifact.atomic import atomic_dir
from videorope_trt.models.loading import INDEX_NAME
from videorope_trt.models.tokenizer import tokenizer_config, train_tokenizer


@dataclass(frozen=True)
class TinySpec:
    hidden_size: int = 256
    intermediate_size: int = 512
    num_hidden_layers: int = 2
    num_attention_heads: int = 4  # head_dim = 256 / 4 = 64
    num_key_value_heads: int = 2
    rope_theta: float = 1_000_000.0
    mrope_section: tuple = (8, 12, 12)
    vision_depth: int = 2
    vision_embed_dim: int = 64
    vision_num_heads: int = 4
    vision_mlp_ratio: int = 2
    patch_size: int = 14
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 16  # at most 16 merged tokens per frame
    vocab_target: int = 640


DEFAULT_ROPE = {"variant": "videorope", "delta": 2.0}
SHARD_NAMES = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")


def qwen2vl_config(spec: TinySpec, token_ids: dict, vocab_size: int, rope: dict) -> dict:
    """config.json as Qwen2-VL checkpoints write it (flat text fields + vision_config)."""
    cfg = {
        "architectures": ["Qwen2VLForConditionalGeneration"],
        "model_type": "qwen2_vl",
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "hidden_act": "silu",
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "rope_theta": spec.rope_theta,
        "rope_scaling": {"type": "mrope", "mrope_section": list(spec.mrope_section)},
        "vocab_size": vocab_size,
        "tie_word_embeddings": False,
        "use_sliding_window": False,
        "torch_dtype": "float32",
        "bos_token_id": token_ids["<|endoftext|>"],
        "eos_token_id": token_ids["<|im_end|>"],
        "vision_start_token_id": token_ids["<|vision_start|>"],
        "vision_end_token_id": token_ids["<|vision_end|>"],
        "vision_token_id": token_ids["<|vision_pad|>"],
        "image_token_id": token_ids["<|image_pad|>"],
        "video_token_id": token_ids["<|video_pad|>"],
        "vision_config": {
            "depth": spec.vision_depth,
            "embed_dim": spec.vision_embed_dim,
            "hidden_size": spec.hidden_size,
            "hidden_act": "quick_gelu",
            "mlp_ratio": spec.vision_mlp_ratio,
            "num_heads": spec.vision_num_heads,
            "in_channels": 3,
            "patch_size": spec.patch_size,
            "spatial_merge_size": spec.spatial_merge_size,
            "temporal_patch_size": spec.temporal_patch_size,
        },
    }
    cfg["videorope_trt"] = rope
    return cfg


def _check_rope(rope: dict, spec: TinySpec) -> None:
    """The recorded variant and parameters must load: fail before writing anything."""
    from videorope_trt.models.rope_settings import make_rope_settings, resolve_rope_choice

    variant, params = resolve_rope_choice(rope, None, None)
    make_rope_settings(variant, params, spec.rope_theta, spec.hidden_size // spec.num_attention_heads)


def preprocessor_config(spec: TinySpec) -> dict:
    """Qwen2-VL image processor fields (both the min/max_pixels spelling and transformers 5's `size`)."""
    return {
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2VLProcessor",
        "do_resize": True,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "do_convert_rgb": True,
        "resample": 3,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "min_pixels": spec.min_pixels,
        "max_pixels": spec.max_pixels,
        "size": {"shortest_edge": spec.min_pixels, "longest_edge": spec.max_pixels},
        "patch_size": spec.patch_size,
        "temporal_patch_size": spec.temporal_patch_size,
        "merge_size": spec.spatial_merge_size,
    }


def _param_shapes(config_dict: dict) -> dict:
    """Parameter names and shapes of the stock model, built on the meta device (no memory, no init)."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    config = Qwen2VLConfig(**{k: v for k, v in config_dict.items() if k != "videorope_trt"})
    with torch.device("meta"):
        model = Qwen2VLForConditionalGeneration(config)
    return {name: tuple(p.shape) for name, p in model.state_dict().items()}


def random_weights(shapes: dict, seed: int) -> dict:
    """Deterministic weights: unit-variance activations (weights ~ N(0, 1/fan_in)), norms near 1, small biases."""
    rng = np.random.Generator(np.random.PCG64(seed))
    out = {}
    for name in sorted(shapes):
        shape = shapes[name]
        if name.endswith(".bias"):
            arr = 0.1 * rng.standard_normal(shape)
        elif "norm" in name or "ln_q" in name:  # RMSNorm / LayerNorm scales
            arr = 1.0 + 0.1 * rng.standard_normal(shape)
        elif "embed_tokens" in name:
            arr = rng.standard_normal(shape)
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
            arr = rng.standard_normal(shape) / np.sqrt(fan_in)
        out[name] = np.ascontiguousarray(arr.astype(np.float32))
    return out


def _write_shards(tmp: Path, weights: dict) -> None:
    from safetensors.numpy import save_file

    # Shard 1: the vision tower; shard 2: the language model and lm_head (real checkpoints split by size).
    groups = ({}, {})
    for name, arr in weights.items():
        groups[0 if ".visual." in f".{name}" else 1][name] = arr
    weight_map = {}
    for shard_name, group in zip(SHARD_NAMES, groups):
        save_file(group, str(tmp / shard_name), metadata={"format": "pt"})
        weight_map.update({name: shard_name for name in group})
    total = int(sum(a.nbytes for a in weights.values()))
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    _write_json(tmp / INDEX_NAME, index)


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def make_tiny(out_dir, seed: int = 0, *, rope: dict | None = None, spec: TinySpec = TinySpec(),
              overwrite: bool = False) -> Path:
    """Write the tiny checkpoint into `out_dir` (built in a temporary folder beside it, renamed on success).

    `rope` is recorded as config.json's "videorope_trt" field (default: VideoRoPE with delta 2).
    """
    out = Path(out_dir)
    rope = dict(DEFAULT_ROPE if rope is None else rope)
    _check_rope(rope, spec)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"make_tiny: {out} exists and is not empty; expected a new or empty folder (or "
                              "overwrite=True)")
    with atomic_dir(out) as tmp:
        tok = train_tokenizer(spec.vocab_target)
        tok.save(str(tmp / "tokenizer.json"))
        token_ids = tok.get_vocab(with_added_tokens=True)
        cfg = qwen2vl_config(spec, token_ids, tok.get_vocab_size(with_added_tokens=True), rope)
        _write_json(tmp / "config.json", cfg)
        _write_json(tmp / "tokenizer_config.json", tokenizer_config())
        _write_json(tmp / "preprocessor_config.json", preprocessor_config(spec))
        gen = {"bos_token_id": cfg["bos_token_id"], "eos_token_id": [cfg["eos_token_id"], cfg["bos_token_id"]],
               "pad_token_id": cfg["bos_token_id"], "do_sample": False}
        _write_json(tmp / "generation_config.json", gen)
        _write_shards(tmp, random_weights(_param_shapes(cfg), seed))
    return out
