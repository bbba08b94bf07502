"""`validate`: the exported graphs against the PyTorch model, through Polygraphy's RunResults and Comparator.

    synthetic MP4 → load_video (real preprocessing) → embed + positions (rope) ─┬─ torch (the model's decoder)
                                                                               ├─ onnxruntime (decoder.onnx)
                                                                               └─ tensorrt (when importable)
    prefill, then `decode_steps` greedy steps. Every backend gets the same feeds at every step (torch's token
    and torch's caches), so each step's error is the graph's own, not an accumulation.

Rows at left-padding positions are zeroed in every backend's outputs before comparing: no valid query attends to
them, and fully masked attention rows are implementation-defined (ORT's Attention and torch's sdpa differ there).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from videorope_trt.artifact.atomic import write_atomic
from videorope_trt.artifact.manifest import read_manifest


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
    import onnxruntime as ort

    from videorope_trt.plugins.ort_op import session_options

    return ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])


def _tensorrt_available():
    import importlib.util

    return importlib.util.find_spec("tensorrt") is not None


BACKENDS = {"torch": None, "onnxruntime": _ort_session, "tensorrt": None}


def typed_feeds(feeds: dict, entry: dict) -> dict:
    """`feeds` in the types the graph's manifest entry gives its inputs (fp16 embeddings and K/V of an fp16
    export): what a runtime feeds it."""
    types = {t["name"]: np.dtype(t["dtype"]) for t in entry["inputs"]}
    return {k: v.astype(types.get(k, v.dtype), copy=False) for k, v in feeds.items()}


def _zero_padding(outputs: dict, step_mask: np.ndarray, full_mask: np.ndarray) -> dict:
    """Outputs with the padding positions' rows zeroed: logits at padded queries, cache rows of padded tokens."""
    out = {}
    for name, value in outputs.items():
        if name == "logits":  # (B, S, vocab), or (B, 1, vocab) when the graph keeps the last position only
            out[name] = value * step_mask[:, -value.shape[1]:, None]
        else:  # a cache (B, KV, C, D): its first rows are the mask's tokens, the rest are still empty
            rows = np.zeros((full_mask.shape[0], value.shape[2]), np.float32)
            rows[:, : full_mask.shape[1]] = full_mask
            out[name] = value * rows[:, None, :, None]
    return out


def _metrics(got: np.ndarray, ref: np.ndarray) -> dict:
    g, r = got.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
    err = float(np.abs(g - r).max()) if g.size else 0.0
    scale = float(np.abs(r).max()) if r.size else 0.0
    cos = float(g @ r / (np.linalg.norm(g) * np.linalg.norm(r))) if g.size and np.linalg.norm(r) > 0 else 1.0
    return {"max_abs": err, "max_rel": err / scale if scale else err, "cosine": cos}


def _backend_runs(req, out: Path, manifest, steps, step_masks):
    """{runner name: [outputs per step]} for every requested backend, and the skipped ones with the reason."""
    runs, skipped = {}, {}
    for name in req.backends:
        if name not in BACKENDS:
            raise ValueError(f"unknown backend {name!r}; expected some of {sorted(BACKENDS)}")
        if name == "torch":
            continue
        if name == "tensorrt":
            skipped[name] = "the tensorrt package is not importable here" if not _tensorrt_available() else \
                "engine runs go through `videorope-trt build` + the runtime's TensorRT backend"
            continue
        sess = BACKENDS[name](out / manifest["graphs"]["decoder"]["file"])
        names = [o.name for o in sess.get_outputs()]
        runner = f"{name}[{manifest['rotary_form']},{manifest['precision']}]"
        runs[runner] = [_zero_padding(dict(zip(names, sess.run(None, feeds))), *m) for (feeds, _), m in zip(steps, step_masks)]
    return runs, skipped


def _table(ref_runs, runs, tol: Tolerance) -> list:
    rows = []
    for runner, outs in runs.items():
        for name in ref_runs[0]:
            per_step = [_metrics(o[name], r[name]) for o, r in zip(outs, ref_runs)]
            row = {"backend": runner, "output": name, "max_abs": max(m["max_abs"] for m in per_step),
                   "max_rel": max(m["max_rel"] for m in per_step), "cosine": min(m["cosine"] for m in per_step)}
            row["passed"] = bool(row["max_rel"] <= tol.max_rel and row["cosine"] >= tol.min_cosine)
            rows.append(row)
    return rows


def _polygraphy(ref_runs, runs, steps, tol: Tolerance, parity: Path) -> dict:
    """Save torch's outputs and the feeds for Polygraphy; compare every runner with its Comparator."""
    from polygraphy.comparator import Comparator, CompareFunc, RunResults
    from polygraphy.comparator.struct import IterationResult
    from polygraphy.json import save_json

    results = RunResults()
    results.append(("torch", [IterationResult(r, runner_name="torch") for r in ref_runs]))
    results.save(str(parity / "torch_outputs.json"))
    save_json([feeds for feeds, _ in steps], str(parity / "inputs.json"))
    for runner, outs in runs.items():
        results.append((runner, [IterationResult(o, runner_name=runner) for o in outs]))
    # Per-output absolute tolerance = the relative tolerance times the output's largest reference magnitude.
    atol = {name: tol.max_rel * max(float(np.abs(r[name]).max()) for r in ref_runs) for name in ref_runs[0]}
    from polygraphy.logger import G_LOGGER

    with G_LOGGER.verbosity(G_LOGGER.WARNING):  # our own table is printed instead of its per-output stats
        accuracy = Comparator.compare_accuracy(results, compare_func=CompareFunc.simple(atol=atol, rtol=0.0,
                                                                                       check_error_stat="max"))
    return {"passed": bool(accuracy), "atol": atol}


def _plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for runner in sorted({r["backend"] for r in rows}):
        mine = [r for r in rows if r["backend"] == runner]
        ax.semilogy(range(len(mine)), [max(r["max_rel"], 1e-12) for r in mine], marker="o", label=runner)
        ax.set_xticks(range(len(mine)), [r["output"] for r in mine], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("max relative error (all steps)")
    ax.set_title("error per output: logits, then the K/V caches layer by layer")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _print(rows, tol, skipped, lines) -> None:
    print(f"{'backend':32} {'output':18} {'max abs':>10} {'max rel':>10} {'cosine':>10}  result")
    for r in rows:
        print(f"{r['backend']:32} {r['output']:18} {r['max_abs']:10.3e} {r['max_rel']:10.3e} {r['cosine']:10.7f}  "
              f"{'pass' if r['passed'] else 'FAIL'}")
    print(f"tolerance: max rel <= {tol.max_rel:g}, cosine >= {tol.min_cosine:g}")
    for name, why in skipped.items():
        print(f"{name}: skipped ({why})")
    print("reproduce with:")
    for line in lines:
        print("  " + line)


def _vision_rows(model, manifest, out: Path, media: dict, req, tol: Tolerance) -> tuple:
    """Rows comparing vision.onnx (ONNX Runtime, a few slices per call) with the model's vision tower, per medium;
    and the feeds of the first failing call (for localization)."""
    import torch

    from videorope_trt.export.parity_inputs import vision_chunks

    if "vision" not in manifest["graphs"] or "onnxruntime" not in req.backends:
        return [], None
    sess = _ort_session(out / manifest["graphs"]["vision"]["file"])
    merge = manifest["model"]["spatial_merge_size"]
    rows, failing = [], None
    for kind, m in media.items():
        with torch.no_grad():
            ref = model.vision(torch.from_numpy(m.pixels), torch.from_numpy(m.grid[None])).numpy()
        feeds = [typed_feeds(f, manifest["graphs"]["vision"]) for f in vision_chunks(m, merge, req.vision_slices_per_call)]
        got = np.concatenate([sess.run(None, f)[0] for f in feeds])
        metrics = _metrics(got, ref) if got.shape == ref.shape else {"max_abs": np.inf, "max_rel": np.inf, "cosine": 0.0}
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


def validate(req: ParityRequest) -> dict:
    """Run the parity check; writes OUT/parity/{report.json, torch_outputs.json, inputs.json, error_per_output.png}."""
    from videorope_trt.export.parity_inputs import parse_layout
    from videorope_trt.models import load_model

    parse_layout(req.layout)  # a bad layout fails before any work
    out = Path(req.out_dir)
    manifest = read_manifest(out)
    ckpt = req.checkpoint or manifest["source"]["checkpoint"]
    model = load_model(ckpt, variant=manifest["rope"]["variant"],
                       rope_params={k: v for k, v in manifest["export"].items() if k == "delta" and v is not None})
    tol = TOLERANCES[manifest["precision"]]
    prompt, steps = _inputs(model, req, manifest, ckpt)
    if "decoder" in manifest["graphs"]:
        steps = [(typed_feeds(feeds, manifest["graphs"]["decoder"]), ref) for feeds, ref in steps]
    step_masks = []
    for feeds, _ in steps:
        full = feeds["attention_mask"].astype(np.float32)
        step_masks.append((full[:, -feeds["inputs_embeds"].shape[1]:], full))
    ref_runs = [_zero_padding(r, *m) for (_, r), m in zip(steps, step_masks)]
    runs, skipped = _backend_runs(req, out, manifest, steps, step_masks) if "decoder" in manifest["graphs"] else ({}, {})
    rows = _table(ref_runs, runs, tol)
    vision_rows, vision_failing = _vision_rows(model, manifest, out, prompt.media, req, tol)
    parity = out / "parity"
    parity.mkdir(exist_ok=True)
    poly = _polygraphy(ref_runs, runs, steps, tol, parity)
    greedy = {runner: all(np.array_equal(o["logits"][:, -1].argmax(-1), r["logits"][:, -1].argmax(-1))
                          for o, r in zip(outs, ref_runs)) for runner, outs in runs.items()}
    atol = " ".join(f"{k}:{v:.3g}" for k, v in poly["atol"].items())
    lines = [f"polygraphy run {out / 'decoder.onnx'} --onnxrt --load-inputs {parity / 'inputs.json'} "
             f"--load-outputs {parity / 'torch_outputs.json'} --rtol 0 --check-error-stat max --atol {atol}"]
    if manifest["rotary_form"] == "plugin":
        lines.append("# the plugin form needs the VideoRope op: polygraphy's --onnxrt cannot load it; export with "
                     "--rotary-form native or decomposed to use this line")
    rows = vision_rows + rows
    _plot(rows, parity / "error_per_output.png")
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
    _print(rows, tol, skipped, lines)
    print(f"greedy tokens equal: {greedy}; polygraphy comparator: {'pass' if poly['passed'] else 'FAIL'}")
    for d in divergence:
        print(f"first diverging node of {d['graph']}: {d.get('node')} ({d.get('op_type', '')}, tensor "
              f"{d.get('tensor', '')}, max rel {d.get('max_rel', float('nan')):.3e})")
    return report


def _first_failing_step(ref_runs, runs, tol: Tolerance) -> int | None:
    for step, ref in enumerate(ref_runs):
        for outs in runs.values():
            for name in ref:
                m = _metrics(outs[step][name], ref[name])
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
