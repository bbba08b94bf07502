"""`export_checkpoint`: checkpoint → vision.onnx + decoder.onnx (+ external data) + manifest.json.

    load_model ─┬─ VisionGraph  ─ torch.onnx (dynamo) ─────────────────────── fp16? ─ dims named ─ vision.onnx
                └─ DecoderGraph ─ torch.onnx (dynamo, VideoRopeCache → one node) ─ fp16? ─ rotary form ─ decoder.onnx

Everything is written into a temporary sibling directory and moved into place at the end, manifest last, so a
failure never leaves a directory that looks finished.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from videorope_trt.artifact import manifest as mf
from videorope_trt.artifact.atomic import atomic_dir
from videorope_trt.artifact.precisions import get_precision
from videorope_trt.export.fp16 import CONVERTERS
from videorope_trt.export.generations import DEFAULT_GENERATION, get_generation
from videorope_trt.plugins.cache_forms import CACHE_FORMS

GRAPHS = ("vision", "decoder")
LOGITS = ("last", "all")


@dataclass(frozen=True)
class ExportConfig:
    variant: str | None = None  # None: the checkpoint's recorded variant, else m_rope
    delta: float | None = None  # VideoRoPE's temporal spacing δ
    rotary_form: str = "plugin"
    precision: str = "fp32"
    #: decoder logits for the last position only, (B, 1, vocab): all generation reads; "all": (B, S, vocab)
    logits: str = "last"
    generation: str = DEFAULT_GENERATION  # which TensorRT parsers read the graphs (export/generations.py)
    graphs: tuple = GRAPHS  # which graphs to write (the vision graph does not depend on the RoPE variant)

    def __post_init__(self):
        object.__setattr__(self, "graphs", tuple(self.graphs))
        if not self.graphs or any(g not in GRAPHS for g in self.graphs):
            raise ValueError(f"graphs {self.graphs!r}: expected a non-empty selection of {list(GRAPHS)}")
        if self.rotary_form not in CACHE_FORMS:
            raise ValueError(f"rotary form {self.rotary_form!r} is unknown; expected one of {sorted(CACHE_FORMS)} "
                             "(the decoder rotates and writes its cache in one op: it has no RotaryEmbedding form)")
        get_generation(self.generation)
        get_precision(self.precision, made_by="export")
        if self.logits not in LOGITS:
            raise ValueError(f"logits {self.logits!r}: expected one of {', '.join(LOGITS)}")
        if self.delta is not None and not (0 < self.delta < 1e6):
            raise ValueError(f"delta must be a positive number, got {self.delta!r}")

    @property
    def last_only(self) -> bool:
        return self.logits == "last"

    @property
    def opset(self) -> int:
        return get_generation(self.generation).opset

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


def _save(model, path: Path, raw_data: Path | None) -> None:
    """Write `path` and its external data. Weights never loaded into memory (fp32) stay in the exporter's data file,
    which is renamed, so a multi-GB model is not copied through Python."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    data = path.with_name(path.name + ".data")
    external = [t for t in model.graph.initializer if uses_external_data(t)]
    if external:
        for t in external:
            for entry in t.external_data:
                if entry.key == "location":
                    entry.value = data.name
        os.replace(raw_data, data)
        os.chmod(data, 0o644)  # the exporter's temporary file is private; artifacts are for sharing
        onnx.save_model(model, str(path))
    else:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=1024)
    onnx.checker.check_model(str(path))  # by path: works with external data and models over 2 GB


#: the logger through which torch.onnx says, once per op and per export, that torchvision (which this project does
#: not install, and whose ops its graphs never use) is missing
TORCHVISION_NOTICE = ("torch.onnx._internal.exporter._registration", "torchvision is not installed")


def _drop_torchvision_notice(record) -> bool:
    return not record.getMessage().startswith(TORCHVISION_NOTICE[1])


@contextmanager
def _without_torchvision_notices():
    notices = logging.getLogger(TORCHVISION_NOTICE[0])
    notices.addFilter(_drop_torchvision_notice)
    try:
        yield
    finally:
        notices.removeFilter(_drop_torchvision_notice)


def _export(module, args, spec, dynamic_shapes, tmp: Path, opset: int, translation=None):
    """torch.onnx (dynamo) → (ModelProto whose weights are still in the data file, that file's path)."""
    import onnx
    import torch

    raw = tmp / f".{spec.name}.raw.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(module, args, dynamo=True, opset_version=opset, input_names=spec.input_names,
                                 output_names=spec.output_names, dynamic_shapes=dynamic_shapes,
                                 custom_translation_table=translation, verbose=False)
    prog.save(str(raw), external_data=True)
    del prog
    model = onnx.load(str(raw), load_external_data=False)
    raw.unlink()
    return model, Path(str(raw) + ".data")


def _precision(onnx_model, raw_data: Path, precision: str, spec):
    """The graph at `precision`, its I/O typed as `spec` says; fp16 needs the weights in memory (it converts them)."""
    if precision == "fp32":
        return onnx_model
    from onnx.external_data_helper import load_external_data_for_model

    load_external_data_for_model(onnx_model, str(raw_data.parent))
    raw_data.unlink(missing_ok=True)
    return CONVERTERS[precision](onnx_model, spec)


def _vision(model, mcfg, tmp, cfg, translation=None):
    import torch

    from videorope_trt.artifact.specs import vision_spec
    from videorope_trt.artifact.vision_inputs import example_grid, slice_pos_ids
    from videorope_trt.export.vision import VisionGraph

    spec = vision_spec(mcfg, get_precision(cfg.precision).float_type)
    m = mcfg.spatial_merge_size
    t, h, w = (int(v) for v in example_grid(m)[0])
    pixels = torch.randn(t * h * w, mcfg.patch_dim, generator=torch.Generator().manual_seed(0))
    ids = torch.from_numpy(slice_pos_ids(h, w, m))
    dims = ({0: torch.export.Dim("num_patches", min=m**2)}, {0: torch.export.Dim("slice_len", min=m**2)})
    onnx_model, raw = _export(VisionGraph(model.visual).eval(), (pixels, ids), spec, dims, tmp, cfg.opset,
                              translation=translation)
    return _precision(onnx_model, raw, cfg.precision, spec), spec, raw


def _decoder(model, mcfg, tmp, cfg, translation=None):
    from videorope_trt.artifact.specs import decoder_spec
    from videorope_trt.export import decoder as dec
    from videorope_trt.plugins import cache_forms

    axes = model.rope.num_axes
    spec = decoder_spec(mcfg, axes, get_precision(cfg.precision).float_type, last_only=cfg.last_only)
    onnx_model, raw = _export(dec.DecoderGraph(model, last_only=cfg.last_only).eval(), dec.example_inputs(mcfg, axes),
                              spec, dec.dynamic_shapes(mcfg, axes), tmp, cfg.opset,
                              translation={**cache_forms.translation_table(), **(translation or {})})
    if cache_forms.cache_node_count(onnx_model) != mcfg.num_layers:
        raise RuntimeError(f"decoder export: expected {mcfg.num_layers} VideoRopeCache nodes (one per layer), "
                           f"found {cache_forms.cache_node_count(onnx_model)}")
    onnx_model = _precision(onnx_model, raw, cfg.precision, spec)
    return cache_forms.switch_cache_form(onnx_model, cfg.rotary_form), spec, raw


def _manifest(model, mcfg, specs, cfg, source: dict) -> dict:
    from videorope_trt.rope import contract

    c = model.config
    from videorope_trt.artifact.specs import cache_aliases

    graphs = {name: {"file": f"{name}.onnx", "external_data": f"{name}.onnx.data", "precision": cfg.precision,
                     **spec.to_json()} for name, spec in specs.items()}
    if "decoder" in graphs:  # which outputs update which inputs: TensorRT keeps them one memory
        graphs["decoder"].update(rotary_form=cfg.rotary_form, aliases=cache_aliases(mcfg.num_layers))
    return {
        "model": {"model_type": c.model_type, **mcfg.to_json(), "num_axes": model.rope.num_axes,
                  "config": c.to_dict()},  # the whole HF config: the memory plan and the builder read it
        "rope": {**model.rope.record(), "num_axes": model.rope.num_axes, "decode_step": model.rope.decode_step,
                 "attrs": asdict(model.rope.attrs)},
        "rotary_form": cfg.rotary_form,
        "precision": cfg.precision,
        "logits": cfg.logits,
        "generation": cfg.generation,
        "opset": cfg.opset,
        "op": {"name": contract.CACHE_OP_NAME, "domain": contract.ONNX_DOMAIN,
               "plugin_namespace": contract.PLUGIN_NAMESPACE, "plugin_version": contract.PLUGIN_VERSION},
        "graphs": graphs,
        "source": source,
        "export": asdict(cfg),
        "tools": mf.tool_versions(),
    }


def export_checkpoint(ckpt_dir, out_dir, cfg: ExportConfig = ExportConfig()) -> dict:
    """Export a Qwen2-VL checkpoint; returns the manifest written to `out_dir/manifest.json`."""
    from videorope_trt.models import load_model, read_config

    read_config(ckpt_dir)  # not a Qwen2-VL checkpoint: error before anything is written
    sha = mf.checkpoint_sha256(ckpt_dir)
    _check_out_dir(Path(out_dir), sha)
    model = load_model(ckpt_dir, variant=cfg.variant, rope_params=cfg.rope_params)
    return export_model(model, out_dir, cfg, {"checkpoint": str(Path(ckpt_dir).resolve()), "sha256": sha})


def export_model(model, out_dir, cfg: ExportConfig, source: dict) -> dict:
    """Export a loaded `VideoRopeQwen2VL` (cfg.variant/delta are already applied to it); `source` is recorded in
    the manifest ({"checkpoint", "sha256"}: the sha256 decides whether `out_dir` may be overwritten)."""
    from videorope_trt.export.decoder import model_config

    out = Path(out_dir)
    _check_out_dir(out, source["sha256"])
    mcfg = model_config(model)
    # What an earlier export of this directory left (graphs, engines, parity and calibration results, Q/DQ graphs:
    # all made from the old graphs) goes with it; built plugin libraries stay.
    with atomic_dir(out, keep=("plugins",)) as tmp:
        specs = {name: _write_graph(model, mcfg, name, tmp / f"{name}.onnx", cfg) for name in cfg.graphs}
        files = _write_model_files(model, cfg, tmp, source.get("checkpoint"))
        mf.write_manifest(tmp, {**_manifest(model, mcfg, specs, cfg, source), "files": files})
    return mf.read_manifest(out)


def _write_model_files(model, cfg: ExportConfig, out: Path, checkpoint) -> dict:
    """What the runtime needs besides the graphs, so that the directory runs on its own: the embedding table in the
    graphs' float type, and the checkpoint's tokenizer, chat template, preprocessor and generation settings."""
    import numpy as np

    from videorope_trt.artifact.embeddings import FILE, write_table

    float_type = get_precision(cfg.precision).float_type
    table = model.text_model.embed_tokens.weight.detach().float().cpu().numpy().astype(np.dtype(float_type))
    write_table(out / FILE, table)
    copied = []
    for name in mf.MODEL_FILES:
        if checkpoint is not None and (Path(checkpoint) / name).is_file():
            shutil.copyfile(Path(checkpoint) / name, out / name)
            copied.append(name)
    missing = [n for n in mf.REQUIRED_MODEL_FILES if n not in copied]
    if missing:
        raise FileNotFoundError(f"export: the checkpoint {checkpoint} lacks {missing}; an artifact carries its "
                                "tokenizer and preprocessor settings (expected a complete Qwen2-VL checkpoint)")
    return {"embeddings": FILE, "model": copied}


STEPS = {"vision": _vision, "decoder": _decoder}


def _write_graph(model, mcfg, graph: str, path: Path, cfg: ExportConfig, translation=None):
    """Trace, convert and save one graph at `path` (+ `path.name`.data, written beside it); returns its spec."""
    with _without_torchvision_notices():
        onnx_model, spec, raw = STEPS[graph](model, mcfg, path.parent, cfg, translation)
    _name_dims(onnx_model, spec)
    _save(onnx_model, path, raw)
    return spec


def export_graph(model, graph: str, path, cfg: ExportConfig = ExportConfig(), translation: dict | None = None):
    """One graph of a loaded model written to `path` and `path`.data through the exporter's own steps (trace,
    precision, rotary form, dim names); `translation` adds torch op → ONNX entries (the calibration's Q/DQ ops).
    Returns the graph's `GraphSpec`. Atomic: both files appear together or not at all."""
    from videorope_trt.export.decoder import model_config

    if graph not in STEPS:
        raise ValueError(f"graph {graph!r}: expected one of {list(STEPS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.export-", dir=path.parent))
    try:
        spec = _write_graph(model, model_config(model), graph, tmp / path.name, cfg, translation)
        data = path.name + ".data"
        if (tmp / data).exists():  # a graph whose tensors are all small has none
            os.replace(tmp / data, path.with_name(data))
        os.replace(tmp / path.name, path)  # the graph last: it is what readers open
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return spec
