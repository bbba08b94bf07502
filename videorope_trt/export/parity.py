"""`validate`: the exported graphs against the PyTorch model, through Polygraphy's RunResults and Comparator.

    synthetic MP4 → load_video (real preprocessing) → embed + positions (rope) ─┬─ torch (the model's decoder)
                                                                               ├─ onnxruntime (decoder.onnx)
                                                                               └─ tensorrt (when importable)
    prefill, then `decode_steps` greedy steps. Every backend gets the same feeds at every step (torch's token
    and torch's present K/V), so each step's error is the graph's own, not an accumulation.

Rows at left-padding positions are left out of every comparison (`parity_compare`): no valid query attends to
them, and fully masked attention rows are implementation-defined (ORT's Attention and torch's sdpa differ there).
The `polygraphy run` line printed to reproduce the check loads the same comparison (parity/compare.py).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from videorope_trt.artifact.atomic import write_atomic
from videorope_trt.artifact.manifest import graph_file, read_manifest
from videorope_trt.export.parity_compare import MASK, PaddingMaskedCompare, error_metrics, write_script, zero_padding


@dataclass(frozen=True)
class Tolerance:
    max_rel: float  # max |a - b| / max |b| per output, over all steps
    min_cosine: float


TOLERANCES = {"fp32": Tolerance(max_rel=1e-5, min_cosine=0.99999), "fp16": Tolerance(max_rel=5e-2, min_cosine=0.999)}


@dataclass(frozen=True)
class ParityRequest:
    out_dir: str
    checkpoint: str | None = None
    backends: tuple = ("torch", "onnxruntime", "tensorrt")
    layout: str = "text:12,video,text:8"
    video_seconds: float = 8.0
    frame_size: tuple = (112, 84)  # width, height of the generated clip
    sample_fps: float = 2.0
    batch: int = 2
    decode_steps: int = 8
    seed: int = 0
    localize: bool = True  # on failure, name the first diverging node (re-exports an fp32 reference)
    vision_slices_per_call: int = 4


def _ort_session(path):
    from videorope_trt.plugins.ort_op import inference_session

    return inference_session(path)


def _tensorrt_available():
    import importlib.util

    return importlib.util.find_spec("tensorrt") is not None


PARITY_RUNNERS = {"torch": None, "onnxruntime": _ort_session, "tensorrt": None}


def typed_feeds(feeds: dict, entry: dict) -> dict:
    """`feeds` in the types the graph's manifest entry gives its inputs (fp16 embeddings and K/V of an fp16
    export): what a runtime feeds it."""
    types = {t["name"]: np.dtype(t["dtype"]) for t in entry["inputs"]}
    return {k: v.astype(types.get(k, v.dtype), copy=False) for k, v in feeds.items()}


def _backend_runs(req, out: Path, manifest, steps):
    """{runner name: [raw outputs per step]} for every requested backend, and the skipped ones with the reason."""
    runs, skipped = {}, {}
    for name in req.backends:
        if name not in PARITY_RUNNERS:
            raise ValueError(f"unknown backend {name!r}; expected some of {sorted(PARITY_RUNNERS)}")
        if name == "torch":
            continue
        if name == "tensorrt":
            skipped[name] = "the tensorrt package is not importable here" if not _tensorrt_available() else \
                "engine runs go through `videorope-trt build` + the runtime's TensorRT backend"
            continue
        sess = PARITY_RUNNERS[name](graph_file(out, manifest, "decoder"))
        names = [o.name for o in sess.get_outputs()]
        runner = f"{name}[{manifest['rotary_form']},{manifest['precision']}]"
        runs[runner] = [dict(zip(names, sess.run(None, feeds))) for feeds, _ in steps]
    return runs, skipped


def _table(ref_runs, runs, tol: Tolerance) -> list:
    rows = []
    for runner, outs in runs.items():
        for name in ref_runs[0]:
            per_step = [error_metrics(o[name], r[name]) for o, r in zip(outs, ref_runs)]
            row = {"backend": runner, "output": name, "max_abs": max(m["max_abs"] for m in per_step),
                   "max_rel": max(m["max_rel"] for m in per_step), "cosine": min(m["cosine"] for m in per_step)}
            row["passed"] = bool(row["max_rel"] <= tol.max_rel and row["cosine"] >= tol.min_cosine)
            rows.append(row)
    return rows


def _polygraphy(ref_runs, runs, steps, tol: Tolerance, parity: Path) -> dict:
    """Save torch's outputs (with each step's attention mask) and the feeds for Polygraphy, write the comparison
    (parity/compare.py) and run it with Polygraphy's Comparator on every runner's raw outputs: the printed
    `polygraphy run` line makes the same comparison."""
    from polygraphy.logger import G_LOGGER

    colors, G_LOGGER.colors = G_LOGGER.colors, False  # else a notice that the 'colored' module is missing
    try:
        with G_LOGGER.verbosity(G_LOGGER.ERROR):  # validate prints its own table; Polygraphy's lines repeat it
            return _compare(ref_runs, runs, steps, tol, parity)
    finally:
        G_LOGGER.colors = colors


def _compare(ref_runs, runs, steps, tol: Tolerance, parity: Path) -> dict:
    from polygraphy.comparator import Comparator, RunResults
    from polygraphy.comparator.struct import IterationResult
    from polygraphy.json import to_json

    masks = [feeds["attention_mask"] for feeds, _ in steps]
    results = RunResults()
    results.append(("torch", [IterationResult({**r, MASK: m}, runner_name="torch") for r, m in zip(ref_runs, masks)]))
    write_atomic(parity / "torch_outputs.json", results.to_json())
    write_atomic(parity / "inputs.json", to_json([feeds for feeds, _ in steps]))
    for runner, outs in runs.items():
        results.append((runner, [IterationResult(o, runner_name=runner) for o in outs]))
    # Per-output absolute tolerance = the relative tolerance times the output's largest reference magnitude
    # (outside the padding).
    zeroed = [zero_padding(r, m) for r, m in zip(ref_runs, masks)]
    atol = {name: tol.max_rel * max(float(np.abs(r[name]).max()) for r in zeroed) for name in zeroed[0]}
    script = write_script(parity, atol)
    if not runs:
        return {"passed": True, "atol": atol, "script": str(script)}
    accuracy = Comparator.compare_accuracy(results, compare_func=PaddingMaskedCompare(atol),
                                           comparisons=[(i, 0) for i in range(1, len(runs) + 1)])
    return {"passed": bool(accuracy), "atol": atol, "script": str(script)}


def _print(rows, tol, skipped, lines, greedy, poly, divergence) -> None:
    print(f"{'backend':32} {'output':18} {'max abs':>10} {'max rel':>10} {'cosine':>10}  result")
    for r in rows:
        print(f"{r['backend']:32} {r['output']:18} {r['max_abs']:10.3e} {r['max_rel']:10.3e} {r['cosine']:10.7f}  "
              f"{'pass' if r['passed'] else 'FAIL'}")
    print(f"tolerance: max rel <= {tol.max_rel:g}, cosine >= {tol.min_cosine:g} (rows at left-padding positions "
          "left out)")
    for name, why in skipped.items():
        print(f"{name}: skipped ({why})")
    if lines:
        print("reproduce with:")
    for line in lines:
        print("  " + line)
    print(f"greedy tokens equal: {greedy}; polygraphy comparator: {'pass' if poly['passed'] else 'FAIL'}")
    for d in divergence:
        print(f"first diverging node of {d['graph']}: {d.get('node')} ({d.get('op_type', '')}, tensor "
              f"{d.get('tensor', '')}, max rel {d.get('max_rel', float('nan')):.3e})")


def _vision_rows(model, manifest, out: Path, media: dict, req, tol: Tolerance) -> tuple:
    """Rows comparing vision.onnx (ONNX Runtime, a few slices per call) with transformers' stock vision tower (the
    checkpoint's own code, not `VisionTower`, from which the graph is traced), per medium; and the feeds of the first
    failing call (for localization)."""
    import torch

    from videorope_trt.export.parity_inputs import vision_chunks

    if "vision" not in manifest["graphs"] or "onnxruntime" not in req.backends:
        return [], None
    sess = _ort_session(graph_file(out, manifest, "vision"))
    merge = manifest["model"]["spatial_merge_size"]
    rows, failing = [], None
    for kind, m in media.items():
        with torch.no_grad():
            pixels = torch.from_numpy(m.pixels).to(model.visual.dtype)
            ref = model.visual(pixels, grid_thw=torch.from_numpy(m.grid[None])).pooler_output.float().numpy()
        chunks = vision_chunks(m, merge, req.vision_slices_per_call)
        feeds = [typed_feeds(f, manifest["graphs"]["vision"]) for f in chunks]
        got = np.concatenate([sess.run(None, f)[0] for f in feeds])
        mismatch = {"max_abs": np.inf, "max_rel": np.inf, "cosine": 0.0}
        metrics = error_metrics(got, ref) if got.shape == ref.shape else mismatch
        row = {"backend": f"onnxruntime[vision,{manifest['precision']}]", "output": f"image_embeds[{kind}]", **metrics}
        row["passed"] = bool(row["max_rel"] <= tol.max_rel and row["cosine"] >= tol.min_cosine)
        rows.append(row)
        if not row["passed"] and failing is None:
            failing = feeds[0]
    return rows, failing


def _localize(model, manifest, out: Path, graph: str, feeds: dict, tol: Tolerance) -> dict:
    """First diverging node of `graph` against a fresh fp32 export of the same model and form."""
    from videorope_trt.export.exporter import ExportConfig, export_model
    from videorope_trt.export.localize import first_divergence

    e = manifest["export"]
    cfg = ExportConfig(variant=manifest["rope"]["variant"], delta=e.get("delta"), rotary_form=manifest["rotary_form"],
                       logits=e["logits"], generation=e["generation"], graphs=(graph,))
    with tempfile.TemporaryDirectory(prefix="videorope-reference-") as ref_dir:
        export_model(model, Path(ref_dir) / "ref", cfg, manifest["source"])
        found = first_divergence(out / manifest["graphs"][graph]["file"], Path(ref_dir) / "ref" / f"{graph}.onnx",
                                 feeds, tol)
    return {"graph": graph, **(found or {"node": None, "note": "no intermediate tensor departs from the reference"})}


def _inputs(model, req, manifest, ckpt):
    from videorope_trt.export.parity_inputs import build_prompt, decoder_steps, make_media

    with tempfile.TemporaryDirectory() as work:
        media, fps = make_media(ckpt, Path(work), seconds=req.video_seconds, frame_size=tuple(req.frame_size),
                                sample_fps=req.sample_fps, seed=req.seed)
    prompt = build_prompt(model.config, req.layout, req.batch, media, fps, req.seed)
    last_only = manifest.get("logits") == "last"
    return prompt, decoder_steps(model, prompt, req.layout, req.decode_steps, last_only)


def _model(req, out: Path, manifest):
    """(the model the artifact was exported from, its checkpoint): that checkpoint only (another one, or the same
    path changed since, is refused), with the artifact's RoPE variant and parameters."""
    from videorope_trt.artifact.manifest import check_checkpoint, checkpoint_of, rope_choice
    from videorope_trt.models import load_model

    ckpt = check_checkpoint(out, manifest, req.checkpoint or checkpoint_of(out, manifest))
    variant, params = rope_choice(manifest)
    return load_model(ckpt, variant=variant, rope_params=params), ckpt


def _reproduce(out: Path, manifest, parity: Path, script: str) -> list:
    lines = [f"polygraphy run {graph_file(out, manifest, 'decoder')} --onnxrt --load-inputs {parity / 'inputs.json'} "
             f"--load-outputs {parity / 'torch_outputs.json'} --compare-func-script {script}"]
    if manifest["rotary_form"] == "plugin":
        lines.append("# the plugin form needs the VideoRope op: polygraphy's --onnxrt cannot load it; export with "
                     "--rotary-form decomposed to use this line")
    return lines


def validate(req: ParityRequest) -> dict:
    """Run the parity check; writes OUT/parity/{report.json, torch_outputs.json, inputs.json, compare.py,
    error_per_output.png}."""
    from videorope_trt.export.parity_inputs import parse_media_layout
    from videorope_trt.export.parity_plot import plot_errors

    parse_media_layout(req.layout)  # a bad layout fails before any work
    out = Path(req.out_dir)
    manifest = read_manifest(out)
    model, ckpt = _model(req, out, manifest)
    tol = TOLERANCES[manifest["precision"]]
    prompt, steps = _inputs(model, req, manifest, ckpt)
    has_decoder = "decoder" in manifest["graphs"]
    if has_decoder:
        steps = [(typed_feeds(feeds, manifest["graphs"]["decoder"]), ref) for feeds, ref in steps]
    masks = [feeds["attention_mask"] for feeds, _ in steps]
    raw_runs, skipped = _backend_runs(req, out, manifest, steps) if has_decoder else ({}, {})
    ref_runs = [zero_padding(r, m) for (_, r), m in zip(steps, masks)]
    runs = {k: [zero_padding(o, m) for o, m in zip(v, masks)] for k, v in raw_runs.items()}
    rows = _table(ref_runs, runs, tol)
    vision_rows, vision_failing = _vision_rows(model, manifest, out, prompt.media, req, tol)
    parity = out / "parity"
    parity.mkdir(exist_ok=True)
    poly = _polygraphy([r for _, r in steps], raw_runs, steps, tol, parity)
    greedy = {runner: all(np.array_equal(o["logits"][:, -1].argmax(-1), r["logits"][:, -1].argmax(-1))
                          for o, r in zip(outs, ref_runs)) for runner, outs in runs.items()}
    lines = _reproduce(out, manifest, parity, poly["script"]) if has_decoder else []
    rows = vision_rows + rows
    plot_errors(rows, tol.max_rel, parity / "error_per_output.png")
    passed = bool(rows) and all(r["passed"] for r in rows) and poly["passed"] and all(greedy.values())
    divergence = []
    if not passed and req.localize:
        divergence = _divergences(model, manifest, out, steps, _first_failing_step(ref_runs, runs, tol),
                                  vision_failing, tol)
    report = {"passed": passed, "precision": manifest["precision"], "rotary_form": manifest["rotary_form"],
              "logits": manifest.get("logits", "all"), "tolerance": tol.__dict__, "rows": rows,
              "greedy_tokens_equal": greedy, "polygraphy": poly, "skipped": skipped, "steps": len(steps),
              "prefill_tokens": int(prompt.ids.shape[1]),
              "media_tokens": {k: m.tokens for k, m in prompt.media.items()}, "layout": req.layout,
              "divergence": divergence, "commands": lines}
    write_atomic(parity / "report.json", json.dumps(report, indent=2) + "\n")
    _print(rows, tol, skipped, lines, greedy, poly, divergence)
    return report


def _first_failing_step(ref_runs, runs, tol: Tolerance) -> int | None:
    for step, ref in enumerate(ref_runs):
        for outs in runs.values():
            for name in ref:
                m = error_metrics(outs[step][name], ref[name])
                if m["max_rel"] > tol.max_rel or m["cosine"] < tol.min_cosine:
                    return step
    return None


def _divergences(model, manifest, out, steps, decoder_step, vision_failing, tol) -> list:
    """Localize each failing graph on its first failing call (vision) or step (decoder)."""
    found = []
    if vision_failing is not None:
        found.append(_localize(model, manifest, out, "vision", vision_failing, tol))
    if decoder_step is not None:
        found.append({"step": decoder_step, **_localize(model, manifest, out, "decoder", steps[decoder_step][0], tol)})
    return found
