"""Calibration accuracy on a Qwen2-VL-2B-shaped model with random weights (no download).

    python -m bench.bench_calibration --out bench_calibration.json [--precisions int8-wo,int8-sq,fp8] [--layers 28]
    (rows may also be int8 = W8A8 without SmoothQuant, and int8-sq@0.5 = SmoothQuant with alpha 0.5)

The 2B shapes are written below as data (Qwen/Qwen2-VL-2B-Instruct config.json). The tokenizer and the
preprocessor settings come from the tiny checkpoint (its small pixel budget keeps each frame at <= 16 video
tokens), the weights are transformers' random initialisation, made once and copied per precision. Videos are
synthetic MP4s decoded and preprocessed as the runtime does; the last one is held out for the figures.
Per precision: ModelOpt PTQ on the calibration samples, then logits cosine, top-1 and greedy-token agreement
against the float model on the held-out sample (the calibration report's numbers), the GEMM output cosines
(mean per kind, lowest five) and, for SmoothQuant rows, how far the largest activation channel stands out. The
float reference is measured once; the model is rebuilt per row (same seed, same weights) so one float copy is in
memory: ~9 GB at 28 layers plus the Q/DQ weights.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import gc
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

from bench.profiling import result_path
from videorope_trt.artifact.atomic import write_atomic

QWEN2_VL_2B = {
    "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
    "num_key_value_heads": 2, "vocab_size": 151936, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True, "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "vision_config": {"depth": 32, "embed_dim": 1280, "hidden_size": 1536, "mlp_ratio": 4, "num_heads": 16,
                      "in_channels": 3, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
                      "hidden_act": "quick_gelu"},
}


def make_checkpoint_dir(root: Path, layers: int) -> Path:
    """A directory with the 2B config.json and the tiny checkpoint's tokenizer/preprocessor (no weights)."""
    from videorope_trt.models import make_tiny

    ckpt = make_tiny(root / "ckpt", seed=0)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg.update(copy.deepcopy(QWEN2_VL_2B))
    cfg["num_hidden_layers"] = layers
    cfg["videorope_trt"] = {"variant": "videorope", "delta": 2.0}
    (ckpt / "config.json").write_text(json.dumps(cfg, indent=2))
    return ckpt


def build_model(ckpt: Path):
    """VideoRopeQwen2VL with transformers' random initialisation for the config in `ckpt`."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    from videorope_trt.models.loading import read_config, rope_theta, text_head_dim
    from videorope_trt.models.qwen2vl import VideoRopeQwen2VL
    from videorope_trt.models.rope_settings import make_rope_settings

    cfg = read_config(ckpt)
    torch.manual_seed(0)
    hf = Qwen2VLForConditionalGeneration(Qwen2VLConfig(**cfg)).eval()
    rope = make_rope_settings("videorope", {"delta": 2.0}, rope_theta(cfg), text_head_dim(cfg))
    return VideoRopeQwen2VL(hf, rope).eval()


def make_inputs(root: Path, n_videos: int) -> tuple:
    """(videos dir, prompts file): synthetic MP4s and three prompts."""
    from videorope_trt.media.synthetic import make_synthetic_video

    videos = root / "videos"
    videos.mkdir()
    for i in range(n_videos):
        make_synthetic_video(videos / f"clip{i}.mp4", seconds=4, fps=4, width=224, height=168, seed=i)
    prompts = root / "prompts.txt"
    prompts.write_text("What happens in the video?\nDescribe the moving shapes.\nWhich number is shown?\n")
    return str(videos), str(prompts)


#: Bench rows beyond the calibrate command's precisions: "int8" is W8A8 without SmoothQuant (ModelOpt's
#: INT8_DEFAULT_CFG), "int8-sq@0.5" is SmoothQuant with migration strength alpha = 0.5 (ModelOpt's default is 1.0).
EXTRA_MODES = {"int8": ("int8", "INT8_DEFAULT_CFG", "int8", "int8", "INT8 W8A8, no smoothing")}
KINDS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def parse_row(text: str) -> tuple:
    """"int8-sq@0.5" → (QuantMode, alpha)."""
    from videorope_trt.calibration.quantize import MODES, QuantMode, get_mode

    name, _, alpha = text.partition("@")
    mode = QuantMode(*EXTRA_MODES[name]) if name in EXTRA_MODES else (MODES.get(name) or get_mode(name))
    return mode, float(alpha) if alpha else None


def outlier_ratios(model) -> dict:
    """Per GEMM kind, the median over layers of max / median of the per-input-channel activation amax that
    SmoothQuant collected: about 1-3 without outlier channels, 10-100 in trained LLMs (SmoothQuant paper)."""
    import numpy as np

    ratios = {}
    for name, m in model.named_modules():
        amax = getattr(getattr(m, "input_quantizer", None), "_amax_for_smoothing", None)
        if amax is not None and ".visual." not in f".{name}.":
            a = amax.float().reshape(-1)
            ratios.setdefault(name.rsplit(".", 1)[-1], []).append(float(a.max() / a.median().clamp(min=1e-12)))
    return {k: round(float(np.median(v)), 2) for k, v in ratios.items()}


def layer_summary(layers: dict, worst: int = 5) -> dict:
    import numpy as np

    by_kind = {k: round(float(np.mean([c for n, c in layers.items() if n.endswith(k)])), 6) for k in KINDS
               if any(n.endswith(k) for n in layers)}
    lowest = dict(sorted(layers.items(), key=lambda kv: kv[1])[:worst])
    return {"mean_by_kind": by_kind, "lowest": {k: round(v, 6) for k, v in lowest.items()}}


def run_row(ckpt, text: str, calib, held, reference, greedy_tokens: int) -> dict:
    from videorope_trt.calibration import quantize, report
    from videorope_trt.calibration.data import prompt_logits

    mode, alpha = parse_row(text)
    start = time.perf_counter()
    model = build_model(ckpt)  # same seed: the same weights for every row, one copy in memory
    quantize.calibrate_model(model, mode, lambda m: [prompt_logits(m, s) for s in calib], alpha=alpha)
    outliers = outlier_ratios(model)
    quantize.to_qdq(model, mode)
    acc = report.compare(reference, report.measure(model, held, greedy_tokens))
    row = {"row": text, "seconds": round(time.perf_counter() - start, 1),
           **{k: acc[k] for k in ("logits_cosine", "top1_agreement", "greedy_agreement")},
           "lowest_layer_cosine": min(acc["layers"].values()), **layer_summary(acc["layers"]),
           **({"activation_outliers": outliers} if outliers else {})}
    del model
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench_calibration.json",
                    help="a .json file, or a folder for bench_calibration.json")
    ap.add_argument("--precisions", default="int8-wo,int8-sq,fp8",
                    help="rows: int8-wo, int8-sq, fp8, int8 (no smoothing); '@A' sets SmoothQuant alpha (int8-sq@0.5)")
    ap.add_argument("--layers", type=int, default=28, help="decoder layers (the 2B model has 28)")
    ap.add_argument("--videos", type=int, default=3, help="synthetic videos; the last one is held out")
    ap.add_argument("--greedy-tokens", type=int, default=8)
    args = ap.parse_args(argv)

    from videorope_trt.calibration import report
    from videorope_trt.calibration.pipeline import CalibrationConfig, prepare_samples

    results, t0 = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ckpt = make_checkpoint_dir(root, args.layers)
        videos, prompts = make_inputs(root, args.videos)
        calib, held = prepare_samples(ckpt, CalibrationConfig("int8-sq", videos, prompts))
        start = time.perf_counter()
        model = build_model(ckpt)
        n_params = sum(p.numel() for p in model.parameters())
        reference = report.measure(model, held, args.greedy_tokens)  # the float model, measured once for all rows
        del model
        print(f"model: {n_params / 1e9:.2f} B parameters; {len(calib)} calibration / {len(held)} held-out samples, "
              f"{held[0].num_tokens} held-out tokens; reference in {time.perf_counter() - start:.0f} s", flush=True)
        for text in args.precisions.split(","):
            results.append(run_row(ckpt, text, calib, held, reference, args.greedy_tokens))
            print(json.dumps(results[-1]), flush=True)
            gc.collect()  # the previous row's model must be gone before the next one is built
    meta = {"date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
            "command": " ".join(sys.argv), "layers": args.layers, "parameters": n_params,
            "calibration_samples": len(calib), "held_out_tokens": held[0].num_tokens,
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 1),
            "total_seconds": round(time.perf_counter() - t0, 1)}
    path = result_path(args.out, "bench_calibration")
    write_atomic(path, json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"wrote {path}")
    print(f"{'row':<14}{'logits cos':>12}{'top-1':>8}{'greedy':>8}{'worst layer':>13}{'s':>7}")
    for r in results:
        print(f"{r['row']:<14}{r['logits_cosine']:>12.6f}{r['top1_agreement']:>8.4f}"
              f"{r['greedy_agreement']:>8.4f}{r['lowest_layer_cosine']:>13.6f}{r['seconds']:>7.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
