"""`calibrate_checkpoint`: checkpoint + videos + prompts → Q/DQ ONNX registered in OUT/manifest.json + report.

    videos, prompts ─ data.make_samples ─┬─ calibration samples ─ ModelOpt PTQ (forward loop) ─ to_qdq
                                         └─ held-out samples ─ reference (float, measured first) ─┐
    quantized model ─ report.measure ─ report.compare ◄────────────────────────────────────────┘
                    ─ export (fp16 or fp32 around the Q/DQ) ─ OUT/decoder.<precision>.onnx ─ ONNX Runtime check
                    ─ OUT/calibration/report.json, then graph "decoder.<precision>" in OUT/manifest.json
                      (a new OUT first gets the float vision graph and its manifest: artifact.py)
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from videorope_trt.artifact.atomic import write_atomic
from videorope_trt.calibration.data import VideoSettings


@dataclass(frozen=True)
class CalibrationConfig:
    precision: str
    videos: str
    prompts: str
    video: VideoSettings = field(default_factory=VideoSettings)
    holdout: int = 1  # videos kept out of calibration for the report
    prompts_per_video: int = 1
    greedy_tokens: int = 8
    quantize_vision: bool = False
    rotary_form: str = "plugin"
    onnx_check: bool = True  # run the exported decoder in ONNX Runtime on the held-out samples
    variant: str | None = None
    float_type: str = "fp16"  # what the Q/DQ pairs leave unquantized (strongly typed engines run it as typed)
    alpha: float | None = None  # SmoothQuant migration strength (int8-sq); None: quantize.DEFAULT_ALPHA
    #: the parser generation of the graphs (export/generations.py); None: the artifact's, or the default for a new one
    generation: str | None = None

    def __post_init__(self):
        from videorope_trt.calibration.export import FLOAT_TYPES
        from videorope_trt.calibration.quantize import get_mode
        from videorope_trt.plugins.cache_forms import CACHE_FORMS as FORMS

        get_mode(self.precision)
        if self.alpha is not None and (self.precision != "int8-sq" or not 0.0 <= self.alpha <= 1.0):
            raise ValueError(f"alpha {self.alpha!r} with precision {self.precision!r}: expected a number in [0, 1], "
                             "and only for int8-sq (SmoothQuant)")
        if self.float_type not in FLOAT_TYPES:
            raise ValueError(f"float type {self.float_type!r} is unknown; expected one of {', '.join(FLOAT_TYPES)}")
        if self.rotary_form not in FORMS:
            raise ValueError(f"rotary form {self.rotary_form!r} is unknown; expected one of {sorted(FORMS)}")
        if self.generation is not None:
            from videorope_trt.export.generations import get_generation

            get_generation(self.generation)
        for name in ("prompts_per_video", "holdout"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: received {getattr(self, name)}, expected an integer >= 1")
        if self.greedy_tokens < 0:
            raise ValueError(f"greedy_tokens: received {self.greedy_tokens}, expected >= 0")


def _no_bar(items, **_):
    return items


def _log(msg: str) -> None:
    print(f"[calibrate] {msg}", file=sys.stderr)


def prepare_samples(ckpt_dir, cfg: CalibrationConfig, bar=_no_bar) -> tuple:
    """(calibration samples, held-out samples). Every input check runs before the model is loaded."""
    from videorope_trt.calibration import data

    videos = data.list_videos(cfg.videos)
    prompts = data.read_prompts(cfg.prompts)
    calib_videos, held_videos = data.split_videos(videos, cfg.holdout)
    calib = data.make_samples(ckpt_dir, calib_videos, prompts, cfg.video, prompts_per_video=cfg.prompts_per_video,
                              bar=bar)
    # held-out videos take prompts from further along the list, so a prompt seen in calibration is not required
    held = data.make_samples(ckpt_dir, held_videos, prompts, cfg.video, offset=len(calib_videos), bar=bar)
    return calib, held


def calibrate_model_on(model, cfg: CalibrationConfig, calib, held, bar=_no_bar) -> dict:
    """Quantize `model` in place on `calib`; returns the accuracy on `held` and the GEMM count."""
    from videorope_trt.calibration import quantize, report
    from videorope_trt.calibration.data import prompt_logits

    mode = quantize.get_mode(cfg.precision)
    start = time.perf_counter()
    reference = report.measure(model, held, cfg.greedy_tokens, bar)
    _log(f"reference measured on {len(held)} held-out sample(s) in {time.perf_counter() - start:.1f} s")

    def forward_loop(m):
        for s in bar(calib, desc=f"calibrate {mode.name}", unit="sample"):
            prompt_logits(m, s)

    start = time.perf_counter()
    quantize.calibrate_model(model, mode, forward_loop, quantize_vision=cfg.quantize_vision, alpha=cfg.alpha)
    count = quantize.to_qdq(model, mode)
    _log(f"{mode.description}: {count} GEMMs quantized in {time.perf_counter() - start:.1f} s")
    measured = report.measure(model, held, cfg.greedy_tokens, bar)
    return {"accuracy": report.compare(reference, measured), "quantized_gemms": count,
            "reference_logits": reference["logits"], "quantized_logits": measured["logits"]}


def _onnx_check(model, path, held, ref_logits, q_logits) -> dict:
    import numpy as np

    from videorope_trt.calibration import report
    from videorope_trt.calibration.data import decoder_feed

    feeds = [decoder_feed(model, s) for s in held]
    text = model.text_model.config
    got = report.onnx_logits(path, feeds, int(text.num_hidden_layers),
                             (int(text.num_key_value_heads), int(model.rope.head_dim)))
    # the graph's logits cover the last position only when exported so: compare the same rows
    ref_logits, q_logits = ([r[-len(g):] for r, g in zip(xs, got)] for xs in (ref_logits, q_logits))
    got, ref, q = (np.concatenate([x.ravel() for x in xs]) for xs in (got, ref_logits, q_logits))
    return {"logits_cosine_vs_float": report.cosine(got, ref), "logits_cosine_vs_torch": report.cosine(got, q)}


def calibrate_checkpoint(ckpt_dir, out_dir, cfg: CalibrationConfig, bar=_no_bar) -> dict:
    """Quantize a checkpoint on videos, export the Q/DQ graphs into `out_dir` and register them in its manifest;
    returns the report."""
    from videorope_trt.artifact.manifest import read_manifest
    from videorope_trt.calibration import artifact, export
    from videorope_trt.models import load_model, read_config

    read_config(ckpt_dir)  # not a Qwen2-VL checkpoint: fail before decoding any video
    out = Path(out_dir)
    artifact.check_out_dir(out, ckpt_dir)
    calib, held = prepare_samples(ckpt_dir, cfg, bar)
    _log(f"{len(calib)} calibration / {len(held)} held-out sample(s), "
         f"{max(s.num_tokens for s in calib + held)} tokens at most")
    if not artifact.has_manifest(out):
        artifact.export_float(ckpt_dir, out, variant=cfg.variant, rotary_form=cfg.rotary_form,
                              float_type=cfg.float_type, generation=cfg.generation)
        _log(f"float vision graph and manifest.json written to {out}")
    manifest = read_manifest(out)
    artifact.check_generation(manifest, cfg.generation)
    model = load_model(ckpt_dir, **artifact.rope_arguments(manifest, cfg.variant)).eval()
    artifact.check_rope(model, manifest)
    result = calibrate_model_on(model, cfg, calib, held, bar)
    (out / "calibration").mkdir(parents=True, exist_ok=True)
    graphs = {"decoder": export.export_decoder(model, out / f"decoder.{cfg.precision}.onnx", cfg.rotary_form,
                                               cfg.float_type, base=manifest.get("export"))}
    if cfg.quantize_vision:
        graphs["vision"] = export.export_vision(model, out / f"vision.{cfg.precision}.onnx", cfg.float_type,
                                                base=manifest.get("export"))
    accuracy = {k: result["accuracy"][k] for k in ("logits_cosine", "top1_agreement", "greedy_agreement")}
    for g in graphs.values():
        g.update(precision=cfg.precision, calibration={"report": "calibration/report.json", **accuracy})
    rep = {
        "precision": cfg.precision, "config": {**asdict(cfg), "video": asdict(cfg.video)},
        "checkpoint": str(Path(ckpt_dir).resolve()), "quantized_gemms": result["quantized_gemms"],
        "samples": {"calibration": len(calib), "held_out": len(held),
                    "held_out_videos": sorted({s.video for s in held})},
        "accuracy": result["accuracy"], "graphs": {artifact.graph_name(r, cfg.precision): g for r, g in graphs.items()},
    }
    if cfg.onnx_check:
        rep["onnx"] = _onnx_check(model, out / graphs["decoder"]["file"], held, result["reference_logits"],
                                  result["quantized_logits"])
    write_atomic(out / "calibration" / "report.json", json.dumps(rep, indent=2) + "\n")
    artifact.register(out, rep["graphs"])  # last: a registered graph has its report
    return rep
