"""The artifact directory a calibration writes into, and how its graphs reach the builder.

    OUT without manifest.json ── `export` of the float vision graph (+ manifest.json) first
    OUT/manifest.json ── the RoPE settings the model is loaded with (the graphs of one directory must agree)
    OUT/decoder.<precision>.onnx ── registered in manifest.json as graph "decoder.<precision>"

A graph's name is `<role>.<precision>`: the builder takes its optimization profiles from the role (the part before
the first '.') and names the engine after the graph, so `videorope-trt build OUT --target T --graphs vision
decoder.int8-sq` builds the float vision encoder beside the quantized decoder.
"""

from __future__ import annotations

import json
from pathlib import Path


def graph_name(role: str, precision: str) -> str:
    return f"{role}.{precision}"


def has_manifest(out: Path) -> bool:
    from videorope_trt.artifact import manifest as mf

    return (Path(out) / mf.NAME).is_file()


def check_out_dir(out: Path, ckpt_dir) -> None:
    """Refuse, before any work, a directory that holds the export of another checkpoint, or unrelated files."""
    from videorope_trt.artifact import manifest as mf

    out = Path(out)
    if has_manifest(out):
        found = mf.read_manifest(out).get("source", {}).get("sha256")
        sha = mf.checkpoint_sha256(ckpt_dir)
        if found != sha:
            raise FileExistsError(f"{out} holds the export of another checkpoint (sha256 {str(found)[:12]}…, this one "
                                  f"{sha[:12]}…); calibrate into that checkpoint's export directory or a new one")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} is not empty and has no {mf.NAME}; expected a new directory or an export of "
                              "this checkpoint")


def export_float(ckpt_dir, out: Path, *, variant: str | None, rotary_form: str, float_type: str,
                 generation: str | None = None) -> dict:
    """A new artifact directory with the float vision graph and manifest.json (the quantized graphs join it)."""
    from videorope_trt.export.exporter import ExportConfig, export_checkpoint

    more = {} if generation is None else {"generation": generation}
    return export_checkpoint(ckpt_dir, out, ExportConfig(variant=variant, rotary_form=rotary_form,
                                                         precision=float_type, graphs=("vision",), **more))


def check_generation(manifest: dict, generation: str | None) -> None:
    """A calibrated graph joins its directory's parser generation: another one asked for is refused."""
    have = (manifest.get("export") or {}).get("generation")
    if generation is not None and have != generation:
        raise ValueError(f"the export in this directory is for {have} parsers, and {generation} was asked for; "
                         "calibrate into a new directory (or export this one again for that target)")


def rope_arguments(manifest: dict, variant: str | None) -> dict:
    """load_model's RoPE arguments: the ones the directory's export used (a different --variant is refused)."""
    export = manifest.get("export") or {}
    recorded = (manifest.get("rope") or {}).get("variant")
    if variant is not None and recorded is not None and variant != recorded:
        raise ValueError(f"variant {variant!r}: the export in this directory uses {recorded!r}; all graphs of one "
                         "directory share one RoPE (calibrate into a new directory for another variant)")
    delta = export.get("delta")
    return {"variant": recorded or variant, "rope_params": None if delta is None else {"delta": float(delta)}}


def check_rope(model, manifest: dict) -> None:
    """The loaded model's RoPE settings equal the manifest's (same variant, parameters, theta, axis map)."""
    have = json.loads(json.dumps(model.rope.record()))
    recorded = manifest.get("rope") or {}
    want = {k: recorded.get(k) for k in have}
    if want != have:
        raise ValueError(f"the model's RoPE settings {have} differ from the export's {want}; calibrate into a new "
                         "directory")


def register(out: Path, entries: dict) -> dict:
    """Add (or replace) graph entries in OUT/manifest.json, rewritten atomically; returns the new manifest."""
    from videorope_trt.artifact import manifest as mf
    from videorope_trt.artifact.atomic import write_atomic

    manifest = mf.read_manifest(out)
    graphs = {**(manifest.get("graphs") or {}), **entries}
    write_atomic(Path(out) / mf.NAME, (json.dumps({**manifest, "graphs": graphs}, indent=2) + "\n").encode())
    return mf.read_manifest(out)
