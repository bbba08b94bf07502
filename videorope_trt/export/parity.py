"""`validate`: the exported graphs against the PyTorch model, through Polygraphy's RunResults and Comparator.

    synthetic MP4 → load_video (real preprocessing) → embed + positions (rope) ─┬─ torch (the model's decoder)
                                                                               ├─ onnxruntime (decoder.onnx)
                                                                               └─ tensorrt (when importable)
    prefill, then `decode_steps` greedy steps. Every backend gets the same feeds at every step (torch's token
    and torch's present K/V), so each step's error is the graph's own, not an accumulation.

Rows at left-padding positions are zeroed in every backend's outputs before comparing: no valid query attends to
them, and fully masked attention rows are implementation-defined (ORT's Attention and torch's sdpa differ there).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from videorope_trt.export.manifest import read_manifest
from videorope_trt.export.specs import past_names


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
    batch: int = 2
    decode_steps: int = 8
    seed: int = 0


def _ort_session(path):
    import onnxruntime as ort

    from videorope_trt.plugins.ort_op import session_options

    return ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])


def _tensorrt_available():
    import importlib.util

    return importlib.util.find_spec("tensorrt") is not None


BACKENDS = {"torch": None, "onnxruntime": _ort_session, "tensorrt": None}


def _prompt(model, req: ParityRequest, ckpt, work: Path):
    """input_ids (B, L) left padded, mask, video pixels and grids, fps: text around a real generated clip."""
    import torch

    from videorope_trt.runtime.synthetic import make_synthetic_video
    from videorope_trt.runtime.video import load_video

    c = model.config
    clip = work / "clip.mp4"
    make_synthetic_video(clip, seconds=req.video_seconds, fps=4, width=112, height=84, seed=req.seed)
    vin = load_video(clip, fps=2.0, processor=ckpt)
    rng = np.random.default_rng(req.seed)
    low_special = min(c.image_token_id, c.video_token_id, c.vision_start_token_id, c.vision_end_token_id)
    rows = []
    for b in range(req.batch):
        ids = []
        for part in req.layout.split(","):
            kind, _, n = part.partition(":")
            if kind == "text":
                ids += rng.integers(3, low_special, max(1, int(n) - 3 * b)).tolist()  # shorter rows get padding
            elif kind == "video":
                ids += [c.vision_start_token_id] + [c.video_token_id] * vin.num_tokens + [c.vision_end_token_id]
            else:
                raise ValueError(f"layout part {part!r}: expected text:N or video")
        rows.append(ids)
    length = max(len(r) for r in rows)
    ids = torch.zeros(req.batch, length, dtype=torch.int64)
    mask = torch.zeros_like(ids)
    for b, r in enumerate(rows):
        ids[b, length - len(r):], mask[b, length - len(r):] = torch.tensor(r), 1
    videos = sum(1 for p in req.layout.split(",") if p == "video")
    pixels = torch.from_numpy(np.concatenate([vin.pixel_values] * videos * req.batch))
    grids = torch.from_numpy(np.stack([vin.grid_thw] * videos * req.batch))
    return ids, mask, pixels, grids, vin


def _zero_padding(outputs: dict, step_mask: np.ndarray, full_mask: np.ndarray) -> dict:
    out = {}
    for name, value in outputs.items():
        if name == "logits":
            out[name] = value * step_mask[:, :, None]
        else:
            out[name] = value * full_mask[:, None, :, None]
    return out


def _steps(model, ids, mask, pixels, grids, vin, decode_steps):
    """The feeds of prefill and each decode step, and torch's outputs for each (teacher forcing from torch)."""
    import torch

    from videorope_trt import rope
    from videorope_trt.export.decoder import DecoderGraph

    graph = DecoderGraph(model).eval()
    dims_layers = len(model.text_model.layers)
    with torch.no_grad():
        embeds = model.embed(ids, pixel_values_videos=pixels, video_grid_thw=grids)
        bp = model.positions(ids, None, grids, mask, fps=vin.fps)
        kv_shape = (ids.shape[0], model.text_model.config.num_key_value_heads, 0, model.rope.head_dim)
        past = [np.zeros(kv_shape, np.float32)] * (2 * dims_layers)
        feeds = {"inputs_embeds": embeds.numpy(), "positions": bp.positions.astype(np.float32),
                 "attention_mask": mask.numpy()}
        steps, cache_pos = [], ids.shape[1]
        for step in range(decode_steps + 1):
            for i in range(dims_layers):
                feeds[past_names(i)[0]], feeds[past_names(i)[1]] = past[2 * i], past[2 * i + 1]
            outs = graph(*[torch.from_numpy(v) for v in feeds.values()])
            names = ["logits"] + [n for i in range(dims_layers) for n in (f"present_key_{i}", f"present_value_{i}")]
            result = {n: o.numpy() for n, o in zip(names, outs)}
            steps.append((dict(feeds), result))
            token = torch.from_numpy(result["logits"][:, -1].argmax(-1))
            past = [result[n] for n in names[1:]]
            feeds = {"inputs_embeds": model.text_model.embed_tokens(token)[:, None].numpy(),
                     "positions": rope.decode_positions(model.rope.variant, bp.rope_deltas,
                                                        np.array([cache_pos])).astype(np.float32),
                     "attention_mask": np.concatenate([feeds["attention_mask"], np.ones((ids.shape[0], 1), np.int64)], 1)}
            cache_pos += 1
    return steps


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
    ax.set_title("error per output: logits, then present K/V layer by layer")
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


def validate(req: ParityRequest) -> dict:
    """Run the parity check; writes OUT/parity/{report.json, torch_outputs.json, inputs.json, error_per_output.png}."""
    from videorope_trt.models import load_model

    out = Path(req.out_dir)
    manifest = read_manifest(out)
    ckpt = req.checkpoint or manifest["source"]["checkpoint"]
    model = load_model(ckpt, variant=manifest["rope"]["variant"],
                       rope_params={k: v for k, v in manifest["export"].items() if k == "delta" and v is not None})
    tol = TOLERANCES[manifest["precision"]]
    with tempfile.TemporaryDirectory() as work:
        ids, mask, pixels, grids, vin = _prompt(model, req, ckpt, Path(work))
        steps = _steps(model, ids, mask, pixels, grids, vin, req.decode_steps)
    step_masks = []
    for feeds, _ in steps:
        full = feeds["attention_mask"].astype(np.float32)
        step_masks.append((full[:, -feeds["inputs_embeds"].shape[1]:], full))
    ref_runs = [_zero_padding(r, *m) for (_, r), m in zip(steps, step_masks)]
    runs, skipped = _backend_runs(req, out, manifest, steps, step_masks)
    rows = _table(ref_runs, runs, tol)
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
    _plot(rows, parity / "error_per_output.png")
    passed = bool(rows) and all(r["passed"] for r in rows) and poly["passed"] and all(greedy.values())
    report = {"passed": passed, "precision": manifest["precision"], "rotary_form": manifest["rotary_form"],
              "tolerance": tol.__dict__, "rows": rows, "greedy_tokens_equal": greedy, "polygraphy": poly,
              "skipped": skipped, "steps": len(steps), "prefill_tokens": int(ids.shape[1]),
              "video_tokens": int(vin.num_tokens), "commands": lines}
    tmp = parity / ".report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(parity / "report.json")
    _print(rows, tol, skipped, lines)
    print(f"greedy tokens equal: {greedy}; polygraphy comparator: {'pass' if poly['passed'] else 'FAIL'}")
    return report
