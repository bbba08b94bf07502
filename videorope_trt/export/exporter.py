"""`export_checkpoint`: checkpoint → vision.onnx + decoder.onnx (+ external data) + manifest.json.

    load_model ─┬─ VisionGraph  ─ torch.onnx (dynamo) ─────────────────────── fp16? ─ dims named ─ vision.onnx
                └─ DecoderGraph ─ torch.onnx (dynamo, VideoRope → one node) ─ fp16? ─ rotary form ─ decoder.onnx

Everything is written into a temporary sibling directory and moved into place at the end, manifest last, so a
failure never leaves a directory that looks finished.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from videorope_trt.export import manifest as mf
from videorope_trt.export.fp16 import PRECISIONS
from videorope_trt.export.rotary import FORMS

OPSET = 23  # RotaryEmbedding, Attention and RMSNormalization are opset-23 ops
GRAPH_FILES = ("vision.onnx", "vision.onnx.data", "decoder.onnx", "decoder.onnx.data")


@dataclass(frozen=True)
class ExportConfig:
    variant: str | None = None  # None: the checkpoint's recorded variant, else m_rope
    delta: float | None = None  # VideoRoPE's temporal spacing δ
    rotary_form: str = "plugin"
    precision: str = "fp32"

    def __post_init__(self):
        if self.rotary_form not in FORMS:
            raise ValueError(f"rotary form {self.rotary_form!r} is unknown; expected one of {sorted(FORMS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is unknown; expected one of {sorted(PRECISIONS)}")
        if self.delta is not None and not (0 < self.delta < 1e6):
            raise ValueError(f"delta must be a positive number, got {self.delta!r}")

    @property
    def rope_params(self) -> dict:
        return {} if self.delta is None else {"delta": float(self.delta)}


def _check_out_dir(out: Path, sha: str) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory; expected a new or export directory")
    if (out / mf.NAME).is_file():
        found = mf.read_manifest(out).get("source", {}).get("sha256")
        if found != sha:
            raise FileExistsError(f"{out} holds the export of another checkpoint (sha256 {str(found)[:12]}…, this one "
                                  f"{sha[:12]}…); choose a new directory or remove it")
    elif any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty and has no {mf.NAME}; expected a new directory or an earlier export")


def _name_dims(model, spec) -> None:
    """Give the graph's inputs/outputs the spec's dim names (torch.onnx names some dims like 's29')."""
    by_name = {t.name: t for t in spec.inputs + spec.outputs}
    for value in list(model.graph.input) + list(model.graph.output):
        t = by_name.get(value.name)
        if t is None:
            continue
        shape = value.type.tensor_type.shape
        for d, want in zip(shape.dim, t.dims):
            if isinstance(want, str):
                d.Clear()
                d.dim_param = want


def _save(model, path: Path) -> None:
    import onnx

    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=1024)
    onnx.checker.check_model(str(path))  # by path: works with external data and models over 2 GB


def _export(module, args, spec, dynamic_shapes, tmp: Path, translation=None):
    """torch.onnx (dynamo) → ModelProto with its weights loaded."""
    import onnx
    import torch

    raw = tmp / f".{spec.name}.raw.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(module, args, dynamo=True, opset_version=OPSET, input_names=spec.input_names,
                                 output_names=spec.output_names, dynamic_shapes=dynamic_shapes,
                                 custom_translation_table=translation, verbose=False)
    prog.save(str(raw), external_data=True)
    model = onnx.load(str(raw))
    raw.unlink()
    Path(str(raw) + ".data").unlink(missing_ok=True)
    return model


def _vision(model, dims, tmp, cfg):
    import torch

    from videorope_trt.export.specs import vision_spec
    from videorope_trt.export.vision import VisionGraph, example_grid, host_inputs

    spec = vision_spec(dims)
    grid = example_grid(dims.spatial_merge_size)
    host = host_inputs(grid, dims.spatial_merge_size)
    pixels = torch.randn(int(grid.prod(1).sum()), dims.patch_dim, generator=torch.Generator().manual_seed(0))
    n = torch.export.Dim("num_patches", min=dims.spatial_merge_size**2)
    onnx_model = _export(VisionGraph(model.visual).eval(), (pixels, torch.from_numpy(host["rotary_pos_ids"]),
                         torch.from_numpy(host["segment_ids"])), spec, ({0: n}, {0: n}, {0: n}), tmp)
    return PRECISIONS[cfg.precision](onnx_model), spec


def _decoder(model, dims, tmp, cfg):
    from videorope_trt.export import decoder as dec
    from videorope_trt.export import rotary
    from videorope_trt.export.specs import decoder_spec

    spec = decoder_spec(dims)
    onnx_model = _export(dec.DecoderGraph(model).eval(), dec.example_inputs(dims), spec, dec.dynamic_shapes(dims),
                         tmp, translation=rotary.translation_table())
    if rotary.rotary_node_count(onnx_model) != 2 * dims.num_layers:
        raise RuntimeError(f"decoder export: expected {2 * dims.num_layers} VideoRope nodes (q and k per layer), "
                           f"found {rotary.rotary_node_count(onnx_model)}")
    onnx_model = PRECISIONS[cfg.precision](onnx_model)
    return rotary.switch_form(onnx_model, cfg.rotary_form), spec


def _manifest(model, dims, specs, cfg, ckpt, sha) -> dict:
    from videorope_trt.plugins import contract

    c = model.config
    graphs = {name: {"file": f"{name}.onnx", "external_data": f"{name}.onnx.data", **spec.to_json()}
              for name, spec in specs.items()}
    return {
        "model": {"model_type": c.model_type, **dims.to_json(), "image_token_id": c.image_token_id,
                  "video_token_id": c.video_token_id, "vision_start_token_id": c.vision_start_token_id,
                  "config": c.to_dict()},  # the whole HF config: the memory plan and the builder read it
        "rope": {**model.rope.record(), "num_axes": model.rope.num_axes, "decode_step": model.rope.decode_step,
                 "attrs": asdict(model.rope.attrs)},
        "rotary_form": cfg.rotary_form,
        "precision": cfg.precision,
        "opset": OPSET,
        "op": {"name": contract.OP_NAME, "domain": contract.ONNX_DOMAIN, "plugin_namespace": contract.PLUGIN_NAMESPACE,
               "plugin_version": contract.PLUGIN_VERSION},
        "graphs": graphs,
        "source": {"checkpoint": str(Path(ckpt).resolve()), "sha256": sha},
        "export": asdict(cfg),
        "tools": mf.tool_versions(),
    }


def export_checkpoint(ckpt_dir, out_dir, cfg: ExportConfig = ExportConfig()) -> dict:
    """Export a Qwen2-VL checkpoint; returns the manifest written to `out_dir/manifest.json`."""
    from videorope_trt.export.decoder import model_dims
    from videorope_trt.models import load_model, read_config

    read_config(ckpt_dir)  # not a Qwen2-VL checkpoint: error before anything is written
    out = Path(out_dir)
    sha = mf.checkpoint_sha256(ckpt_dir)
    _check_out_dir(out, sha)
    model = load_model(ckpt_dir, variant=cfg.variant, rope_params=cfg.rope_params)
    dims = model_dims(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the artifact directory is for sharing
    try:
        specs = {}
        for name, step in (("vision", _vision), ("decoder", _decoder)):
            onnx_model, specs[name] = step(model, dims, tmp, cfg)
            _name_dims(onnx_model, specs[name])
            _save(onnx_model, tmp / f"{name}.onnx")
        manifest = _manifest(model, dims, specs, cfg, ckpt_dir, sha)
        _move_into_place(tmp, out)
        mf.write_manifest(out, manifest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return mf.read_manifest(out)


def _move_into_place(tmp: Path, out: Path) -> None:
    if not out.exists():
        os.replace(tmp, out)
        tmp.mkdir()  # the caller's cleanup removes this empty stand-in
        return
    (out / mf.NAME).unlink(missing_ok=True)  # the old manifest goes first: a half-moved directory is unfinished
    for name in GRAPH_FILES:
        if (tmp / name).exists():
            os.replace(tmp / name, out / name)
