"""Load (and save) a local Qwen2-VL checkpoint directory: config, safetensors shards, tokenizer.

Weights are read only from safetensors (never pickle) and only stock transformers classes are used (never
`trust_remote_code`). Every problem is found before or right after the load and reported with what was
received and what was expected: a missing file, a config of another model type, a tensor of the wrong shape,
an unknown RoPE variant.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from videorope_trt.artifact.atomic import atomic_dir, read_json
from videorope_trt.models.rope_settings import CONFIG_FIELD, make_rope_settings, resolve_rope_choice

MODEL_TYPES = ("qwen2_vl",)
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def read_config(ckpt_dir) -> dict:
    """config.json of a Qwen2-VL checkpoint, checked to be one."""
    ckpt = Path(ckpt_dir)
    if not ckpt.is_dir():
        raise FileNotFoundError(f"checkpoint: {ckpt} is not a directory; expected a Hugging Face checkpoint folder")
    path = ckpt / "config.json"
    cfg = read_json(path, "expected config.json in the checkpoint folder")
    model_type = cfg.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ValueError(f"checkpoint: {path} has model_type={model_type!r} (architectures "
                         f"{cfg.get('architectures')}); expected a Qwen2-VL config, model_type in {list(MODEL_TYPES)}")
    return cfg


def weight_files(ckpt_dir) -> list[Path]:
    """The safetensors files the checkpoint's index names (or its single model.safetensors), all present."""
    ckpt = Path(ckpt_dir)
    index = ckpt / INDEX_NAME
    if index.is_file():
        names = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
        if not names:
            raise ValueError(f"checkpoint: {index} has an empty weight_map")
        missing = [n for n in names if not (ckpt / n).is_file()]
        if missing:
            raise FileNotFoundError(f"checkpoint: {index} names shard(s) {missing} that are not in {ckpt}")
        return [ckpt / n for n in names]
    if (ckpt / SINGLE_NAME).is_file():
        return [ckpt / SINGLE_NAME]
    pickled = sorted(p.name for p in ckpt.glob("*.bin")) + sorted(p.name for p in ckpt.glob("*.pt"))
    hint = f" (found pickle files {pickled}, which are never loaded: convert them to safetensors)" if pickled else ""
    raise FileNotFoundError(f"checkpoint: no weights in {ckpt}; expected {INDEX_NAME} with its shards or "
                            f"{SINGLE_NAME}{hint}")


def text_head_dim(cfg: dict) -> int:
    text = cfg.get("text_config") or cfg
    return int(text.get("head_dim") or text["hidden_size"] // text["num_attention_heads"])


def rope_theta(cfg: dict) -> float:
    text = cfg.get("text_config") or cfg
    params = text.get("rope_parameters") or {}
    return float(params.get("rope_theta", text.get("rope_theta", 1_000_000.0)))


def load_model(ckpt_dir, *, variant=None, rope_params=None, dtype=None):
    """`VideoRopeQwen2VL` from a local checkpoint; the variant is `variant`, else config.json's field, else m_rope."""
    import torch
    from transformers import Qwen2VLForConditionalGeneration

    from videorope_trt.models.qwen2vl import VideoRopeQwen2VL

    dtype = torch.float32 if dtype is None else dtype
    cfg = read_config(ckpt_dir)
    weight_files(ckpt_dir)
    name, params = resolve_rope_choice(cfg.get(CONFIG_FIELD), variant, rope_params)
    rope = make_rope_settings(name, params, rope_theta(cfg), text_head_dim(cfg))
    # ignore_mismatched_sizes lets the load finish and list every wrong shape; any mismatch is then an error.
    hf, info = Qwen2VLForConditionalGeneration.from_pretrained(
        str(ckpt_dir), dtype=dtype, use_safetensors=True, trust_remote_code=False, local_files_only=True,
        output_loading_info=True, ignore_mismatched_sizes=True, attn_implementation="sdpa")
    _check_loading_info(ckpt_dir, info)
    hf.eval()
    return VideoRopeQwen2VL(hf, rope).eval()


def _check_loading_info(ckpt_dir, info: dict) -> None:
    problems = []
    if info.get("mismatched_keys"):
        shown = sorted(info["mismatched_keys"])[:8]
        problems.append("wrong shapes: " + ", ".join(_describe_mismatch(m) for m in shown))
    if info.get("missing_keys"):
        problems.append(f"missing tensors: {sorted(info['missing_keys'])[:8]}")
    if info.get("error_msgs"):
        problems.append(f"errors: {info['error_msgs'][:4]}")
    if problems:
        raise ValueError(f"checkpoint: {ckpt_dir} does not match its config.json; " + "; ".join(problems))


def _describe_mismatch(m) -> str:
    if isinstance(m, (tuple, list)) and len(m) == 3:
        return f"{m[0]} is {tuple(m[1])} in the file, the config expects {tuple(m[2])}"
    return str(m)


def load_tokenizer(ckpt_dir):
    """The checkpoint's tokenizer through transformers' AutoTokenizer (local files only)."""
    from transformers import AutoTokenizer

    ckpt = Path(ckpt_dir)
    missing = [n for n in TOKENIZER_FILES if not (ckpt / n).is_file()]
    if missing:
        raise FileNotFoundError(f"checkpoint: tokenizer file(s) {missing} missing from {ckpt}; expected "
                                f"{list(TOKENIZER_FILES)}")
    return AutoTokenizer.from_pretrained(str(ckpt), local_files_only=True, trust_remote_code=False)


def save_model(model, out_dir, *, copy_from=None) -> Path:
    """Write the model as a checkpoint (safetensors) with its RoPE settings recorded in config.json.

    `copy_from` names a checkpoint whose tokenizer and preprocessor files are copied alongside.
    """
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        setattr(model.hf.config, CONFIG_FIELD, model.rope.record())
        model.hf.save_pretrained(str(tmp), safe_serialization=True)
        for name in (*TOKENIZER_FILES, "preprocessor_config.json", "generation_config.json"):
            if copy_from is not None and (Path(copy_from) / name).is_file() and not (tmp / name).exists():
                shutil.copy2(Path(copy_from) / name, tmp / name)
    return out
