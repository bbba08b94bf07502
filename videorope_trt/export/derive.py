"""Another rotary form or precision of an existing export, without tracing the model again.

    OUT (plugin form, fp32) ─ load ─ fp16? ─ switch_form ─ save ─→ NEW (any form, fp32 or fp16) + manifest.json

The exporter applies the same steps in the same order to the freshly traced graph (precision, then form, while
the rotation is still one opaque `VideoRope` node), so a derived directory holds the graphs a direct export with
those options writes. Useful to compare forms (the benchmark says which is fastest where) and to keep tests fast.
"""

from __future__ import annotations

from pathlib import Path

from videorope_trt.artifact.atomic import atomic_dir
from videorope_trt.artifact import manifest as mf


def _check_source(manifest: dict, form: str, precision: str) -> None:
    if manifest["rotary_form"] != "plugin" and form != manifest["rotary_form"]:
        raise ValueError(f"derive: the source is in the {manifest['rotary_form']!r} form; another form can only be "
                         "derived from a 'plugin' export (its rotation is still one node)")
    if manifest["precision"] != "fp32" and precision != manifest["precision"]:
        raise ValueError(f"derive: the source is {manifest['precision']}; another precision can only be derived "
                         "from an fp32 export")


def derive_export(src_dir, dst_dir, *, rotary_form: str | None = None, precision: str | None = None) -> dict:
    """Write `dst_dir` (new) from the export in `src_dir`; returns its manifest."""
    import onnx

    from videorope_trt.export import rotary
    from videorope_trt.export.exporter import ExportConfig, _name_dims, _save
    from videorope_trt.export.fp16 import PRECISIONS
    from videorope_trt.artifact.specs import GraphSpec, TensorSpec

    src, dst = Path(src_dir), Path(dst_dir)
    manifest = mf.read_manifest(src)
    form = rotary_form or manifest["rotary_form"]
    precision = precision or manifest["precision"]
    ExportConfig(rotary_form=form, precision=precision)  # checks the names
    _check_source(manifest, form, precision)
    if dst.exists():
        raise FileExistsError(f"derive: {dst} exists; expected a new directory")
    with atomic_dir(dst) as tmp:
        for name, entry in manifest["graphs"].items():
            model = onnx.load(str(src / entry["file"]))
            if precision != manifest["precision"]:
                model = PRECISIONS[precision](model)
            if name == "decoder":
                rotary.switch_form(model, form)
            spec = GraphSpec(name, tuple(TensorSpec(t["name"], t["dtype"], tuple(t["shape"])) for t in entry["inputs"]),
                             tuple(TensorSpec(t["name"], t["dtype"], tuple(t["shape"])) for t in entry["outputs"]))
            _name_dims(model, spec)
            _save(model, tmp / entry["file"], None)
        graphs = {g: {**e, "precision": precision} for g, e in manifest["graphs"].items()}
        mf.write_manifest(tmp, {**{k: v for k, v in manifest.items() if k not in ("format_version", "kind")},
                                "graphs": graphs,
                                "rotary_form": form, "precision": precision,
                                "export": {**manifest["export"], "rotary_form": form, "precision": precision},
                                "derived_from": str(src.resolve())})
    return mf.read_manifest(dst)
