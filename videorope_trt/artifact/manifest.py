"""manifest.json: what an artifact directory holds, as every later stage reads it.

Written last (atomically), so a directory with a manifest is a finished export. Readers check `format_version`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from videorope_trt.artifact.atomic import read_json, write_atomic

FORMAT_VERSION = 2  # 2: the directory carries its embedding table and the checkpoint's tokenizer files
KIND = "videorope-trt-export"
NAME = "manifest.json"
#: checkpoint files an artifact carries beside its graphs (those present): tokenizer, chat template, preprocessor
#: and generation settings; the first two are required
MODEL_FILES = ("tokenizer.json", "preprocessor_config.json", "tokenizer_config.json", "special_tokens_map.json",
               "added_tokens.json", "vocab.json", "merges.txt", "chat_template.json", "chat_template.jinja",
               "video_preprocessor_config.json", "generation_config.json")
REQUIRED_MODEL_FILES = MODEL_FILES[:2]


def checkpoint_sha256(ckpt_dir) -> str:
    """A fingerprint of a checkpoint: config.json's bytes plus each weight file's name, size and first MiB.

    Cheap on multi-GB checkpoints and enough to tell two checkpoints apart (different config or weights).
    """
    ckpt = Path(ckpt_dir)
    h = hashlib.sha256((ckpt / "config.json").read_bytes())
    for path in sorted(ckpt.glob("*.safetensors")):
        h.update(f"{path.name}:{path.stat().st_size}".encode())
        with open(path, "rb") as f:
            h.update(f.read(1 << 20))
    return h.hexdigest()


def tool_versions() -> dict:
    from importlib import metadata

    out = {}
    for dist in ("videorope-trt", "torch", "transformers", "onnx", "onnxscript", "onnxruntime",
                 "onnxruntime-extensions", "onnxconverter-common", "polygraphy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def write_manifest(out_dir, manifest: dict) -> Path:
    return write_atomic(Path(out_dir) / NAME,
                        json.dumps({"format_version": FORMAT_VERSION, "kind": KIND, **manifest}, indent=2) + "\n")


def read_manifest(out_dir) -> dict:
    """The manifest of an export directory, checked to be one this version reads."""
    path = Path(out_dir) / NAME
    data = read_json(path, "expected a directory written by `videorope-trt export`")
    if data.get("kind") != KIND or data.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: kind={data.get('kind')!r} format_version={data.get('format_version')!r}; "
                         f"expected kind={KIND!r} format_version={FORMAT_VERSION} (export it again with this version)")
    return data


def checkpoint_of(artifact, manifest: dict) -> Path:
    """The checkpoint an export directory came from (the PyTorch weights: the torch backend, validate and calibrate
    read them): the one its manifest records, else the directory itself when it holds a config.json."""
    path = (manifest.get("source") or {}).get("checkpoint")
    if path and (Path(path) / "config.json").is_file():
        return Path(path)
    if (Path(artifact) / "config.json").is_file():
        return Path(artifact)
    raise FileNotFoundError(f"{artifact}: the checkpoint recorded in manifest.json ({path}) is not there; pass --checkpoint DIR")
