"""manifest.json: what an artifact directory holds, as every later stage reads it.

Written last (atomically), so a directory with a manifest is a finished export. Readers check `format_version`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from videorope_trt.artifact.atomic import read_json, write_atomic

#: 2: the directory carries its embedding table and the checkpoint's tokenizer files; 3: the vision graph takes whole
#: slices of one grid and one slice's position ids (pixel_values, slice_pos_ids), no longer per-patch ids and segments
FORMAT_VERSION = 3
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


#: fields of the manifest's rope record that describe its frequencies, not the variant's parameters
ROPE_RECORD = ("variant", "theta", "head_dim", "axis_map", "num_axes", "decode_step", "attrs")


def rope_choice(manifest: dict) -> tuple:
    """(variant, parameters) the artifact's graphs were exported with: what every stage that rebuilds its model from
    the checkpoint (the torch backend, validate) must load, whatever the checkpoint's own config says."""
    rope = manifest.get("rope") or {}
    return rope.get("variant"), {k: v for k, v in rope.items() if k not in ROPE_RECORD}


def check_checkpoint(artifact, manifest: dict, ckpt) -> Path:
    """`ckpt` checked to be the checkpoint the artifact was exported from (sha256 as the manifest records it)."""
    source = manifest.get("source") or {}
    if checkpoint_sha256(ckpt) != source.get("sha256"):
        raise ValueError(f"checkpoint {ckpt} is not the one {artifact} was exported from ({source.get('checkpoint')}, "
                         f"sha256 {str(source.get('sha256'))[:12]}…): its answers would be another model's")
    return Path(ckpt)


def checkpoint_of(artifact, manifest: dict) -> Path:
    """The checkpoint an export directory came from (the PyTorch weights: the torch backend, validate and calibrate
    read them): the one its manifest records, else the directory itself when it holds a config.json."""
    path = (manifest.get("source") or {}).get("checkpoint")
    if path and (Path(path) / "config.json").is_file():
        return Path(path)
    if (Path(artifact) / "config.json").is_file():
        return Path(artifact)
    raise FileNotFoundError(f"{artifact}: the checkpoint recorded in manifest.json ({path}) is not there; pass "
                            "--checkpoint DIR")


def graph_file(artifact, manifest: dict, graph: str) -> Path:
    """The ONNX file of a graph the manifest registers, checked to be there with the external data files it keeps
    its weights in: a missing one is named here, not left for ONNX Runtime or a TensorRT parser to trip over."""
    graphs = manifest.get("graphs") or {}
    if graph not in graphs:
        raise ValueError(f"{artifact}: no graph {graph!r}; the manifest registers {', '.join(sorted(graphs))}")
    path = Path(artifact) / graphs[graph].get("file", f"{graph}.onnx")
    if not path.is_file():
        raise FileNotFoundError(f"{artifact}: the {graph} graph {path.name} is missing; export (or calibrate) again")
    for name in sorted(_external_data(path)):
        if not (path.parent / name).is_file():
            raise FileNotFoundError(f"{artifact}: {name}, the weights of the {graph} graph {path.name}, is missing; "
                                    "copy it along with the graph, or export (or calibrate) again")
    return path


def _external_data(path: Path) -> set:
    """The files (relative to the graph) that hold a graph's external tensors."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    return {e.value for t in model.graph.initializer if uses_external_data(t) for e in t.external_data
            if e.key == "location"}
