"""Another rotary form or precision of an existing export, without tracing the model again.

    OUT (plugin form, fp32) ─ load ─ fp16? ─ switch_form ─ save ─→ NEW (any form, fp32 or fp16) + manifest.json

The exporter applies the same steps in the same order to the freshly traced graph (precision, then form, while
the rotation is still one opaque `VideoRope` node), so a derived directory holds the graphs a direct export with
those options writes. Useful to compare forms (the benchmark says which is fastest where) and to keep tests fast.
"""

from __future__ import annotations

from pathlib import Path

from videorope_trt.artifact import manifest as mf
from videorope_trt.artifact.atomic import atomic_dir


def _check_source(manifest: dict, form: str, precision: str) -> None:
    if manifest["rotary_form"] != "plugin" and form != manifest["rotary_form"]:
        raise ValueError(f"derive: the source is in the {manifest['rotary_form']!r} form; another form can only be "
                         "derived from a 'plugin' export (its rotation is still one node)")
    if manifest["precision"] != "fp32" and precision != manifest["precision"]:
        raise ValueError(f"derive: the source is {manifest['precision']}; another precision can only be derived "
                         "from an fp32 export")


def derive_export(src_dir, dst_dir, *, rotary_form: str | None = None, precision: str | None = None) -> dict:
    """Write `dst_dir` (new) from the export in `src_dir`; returns its manifest."""
    import shutil

    import numpy as np
    import onnx

    from videorope_trt.artifact.embeddings import read_table, write_table
    from videorope_trt.artifact.model_config import ModelConfig
    from videorope_trt.artifact.precisions import get_precision
    from videorope_trt.artifact.specs import decoder_spec, vision_spec
    from videorope_trt.export.exporter import ExportConfig, _name_dims, _save
    from videorope_trt.export.fp16 import CONVERTERS
    from videorope_trt.plugins.cache_forms import switch_cache_form

    src, dst = Path(src_dir), Path(dst_dir)
    manifest = mf.read_manifest(src)
    form = rotary_form or manifest["rotary_form"]
    precision = precision or manifest["precision"]
    export = {**manifest["export"], "rotary_form": form, "precision": precision}
    cfg = ExportConfig(**{k: (tuple(v) if k == "graphs" else v) for k, v in export.items()})  # checks the names
    _check_source(manifest, form, precision)
    if dst.exists():
        raise FileExistsError(f"derive: {dst} exists; expected a new directory")
    model_cfg, float_type = ModelConfig.from_config(manifest["model"]["config"]), get_precision(precision).float_type
    specs = {"vision": vision_spec(model_cfg, float_type),
             "decoder": decoder_spec(model_cfg, manifest["model"]["num_axes"], float_type, last_only=cfg.last_only)}
    with atomic_dir(dst) as tmp:
        for name, entry in manifest["graphs"].items():
            model = onnx.load(str(src / entry["file"]))
            if precision != manifest["precision"]:
                model = CONVERTERS[precision](model, specs[name])
            if name == "decoder":
                switch_cache_form(model, form)
            _name_dims(model, specs[name])
            _save(model, tmp / entry["file"], None)
        files = manifest["files"]
        write_table(tmp / files["embeddings"], read_table(src / files["embeddings"]).astype(np.dtype(float_type)))
        for name in files["model"]:
            shutil.copyfile(src / name, tmp / name)
        graphs = {g: {**e, "precision": precision, **specs[g].to_json()} for g, e in manifest["graphs"].items()}
        mf.write_manifest(tmp, {**{k: v for k, v in manifest.items() if k not in ("format_version", "kind")},
                                "graphs": graphs, "rotary_form": form, "precision": precision, "export": export,
                                "derived_from": str(src.resolve())})
    return mf.read_manifest(dst)
