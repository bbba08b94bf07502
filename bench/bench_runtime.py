"""Runtime speed on one GPU: our PyTorch backend vs transformers on the same model and the same inputs.

Qwen2-VL-2B- and -7B-shaped models (the real configs, random weights: nothing is downloaded), a synthetic video
filling the context, batch 1. For each context it measures, for ours (static cache, CUDA-graphed decode) and for
transformers' `generate` (default sdpa, and `cache_implementation="static"`): time to first token, decode tokens/s,
peak device memory; plus vision ms per frame and prefill tokens/s for ours, and the decode roofline
((weight bytes + KV bytes read per token) / device copy bandwidth measured in this run).

    python -m bench.bench_runtime --model 2b --contexts 8k,16k,32k,64k --out bench-out     # on the GPU
    (--kernel-lib <libvideorope_kernel.so> selects the CUDA rotary kernel for prefill; --ours-settings graph,compile
    adds the torch.compile-fused decode step)
    python -m bench.bench_runtime --model tiny --device cpu --dtype float32 --contexts 300 --decode-tokens 4 \\
        --hf-settings default --out /tmp/bench                                            # dry run anywhere
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench.profiling import copy_bandwidth, run_meta, write_json
from bench.runtime_probes import decode_graph_profile, matmul_flops_per_s, phase_peaks, profile_ttft, ttft_flops
from videorope_trt.artifact.model_config import PUBLISHED

#: The published Qwen2-VL configs (random weights are drawn for them), with room for positions past the published
#: 32768: the benchmarks measure contexts up to 64k.
CONFIGS = {name: {**PUBLISHED[f"qwen2-vl-{name}"], "max_position_embeddings": 131072} for name in ("2b", "7b")}


def model_config(name: str) -> dict:
    if name == "tiny":
        from videorope_trt.models import make_tiny

        return json.loads((make_tiny(Path(tempfile.mkdtemp()) / "tiny") / "config.json").read_text())
    if name not in CONFIGS:
        raise ValueError(f"--model {name!r}: expected one of {sorted(CONFIGS) + ['tiny']}")
    return CONFIGS[name]


def build_models(cfg: dict, device, dtype):
    """(transformers model, our model) sharing one set of random weights."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    from videorope_trt.models.qwen2vl import VideoRopeQwen2VL
    from videorope_trt.models.rope_settings import make_rope_settings

    torch.manual_seed(0)
    config = Qwen2VLConfig(**{k: v for k, v in cfg.items() if k != "videorope_trt"})
    with torch.device(device):
        hf = Qwen2VLForConditionalGeneration._from_config(config, dtype=dtype, attn_implementation="sdpa").eval()
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    ours = VideoRopeQwen2VL(hf, make_rope_settings("m_rope", {}, cfg["rope_theta"], head_dim)).to(device).eval()
    return hf, ours


def synthetic_inputs(cfg: dict, context: int, frame_side: int, device, dtype):
    """Token ids (text, <vision_start>, video tokens, <vision_end>, text) and random patches filling `context`."""
    v = cfg["vision_config"]
    p, m, tp = v["patch_size"], v["spatial_merge_size"], v["temporal_patch_size"]
    side = max(m, frame_side // p // m * m)
    per_slice = side * side // m**2
    t = max(1, (context - 40) // per_slice)
    rng = np.random.default_rng(0)
    high = min(5000, cfg["vocab_size"] - 20)  # below the special tokens (the tiny vocabulary ends with them)
    text = lambda n: rng.integers(100, high, n).tolist()
    ids = text(20) + [cfg["vision_start_token_id"]] + [cfg["video_token_id"]] * (t * per_slice) + \
        [cfg["vision_end_token_id"]] + text(context - 22 - t * per_slice)
    pixels = torch.randn(t * side * side, 3 * tp * p * p, generator=torch.Generator().manual_seed(1)).to(device, dtype)
    return ids, pixels, (t, side, side), t * tp


def decode_bytes(cfg: dict, model, context: int) -> int:
    """The fewest bytes one decode step reads: every decoder weight, the lm_head and the whole KV cache once
    (the embedding table contributes one row, so it counts only where it is the tied lm_head)."""
    text = model.text_model
    weights = sum(p.numel() * p.element_size() for p in text.layers.parameters())
    weights += sum(p.numel() * p.element_size() for p in text.norm.parameters())
    weights += model.hf.lm_head.weight.numel() * model.hf.lm_head.weight.element_size()
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    kv = 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * head_dim * context * model.dtype.itemsize
    return weights + kv


def roofline_tok_s(cfg: dict, model, context: int, bandwidth: float) -> float:
    """Decode tokens/s if every step read its bytes (`decode_bytes`) at the measured copy bandwidth."""
    return bandwidth / decode_bytes(cfg, model, context)


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device):
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gb(device) -> float:
    return torch.cuda.max_memory_allocated() / 1e9 if torch.device(device).type == "cuda" else float("nan")


#: --ours-settings name → TorchOptions (graph: the CUDA-graphed decode step; compile: plus torch.compile;
#: *_split_prefill: each prefill chunk's attention as two cuDNN parts merged, instead of one SDPA call). The
#: kernels themselves are not settings: the backend runs the ones these benches chose (docs/benchmark-log.md)
OURS_SETTINGS = {
    "graph": {"compile": False}, "compile": {"compile": True},
    "split_prefill": {"compile": False, "split_prefill": True},
    "compile_split_prefill": {"compile": True, "split_prefill": True},
}


def bench_ours(ours, cfg, ids, pixels, grid, frames, decode_tokens, device, args, setting: str = "graph") -> dict:
    """Our generate on the PyTorch backend (static cache, CUDA-graphed decode; options: `OURS_SETTINGS`).
    The patches stay on the host, as a decoded video does; each vision chunk is copied when encoded."""
    from types import SimpleNamespace

    from videorope_trt.runtime.backends import ModelInfo
    from videorope_trt.runtime.backends.torch.backend import TorchBackend, TorchOptions
    from videorope_trt.runtime.generate import GenerationConfig, generate

    info = ModelInfo.from_config(cfg, "m_rope")
    options = TorchOptions(device=device, cuda_graph=not args.no_cuda_graph, kernel_lib=args.kernel_lib,
                           **OURS_SETTINGS[setting])
    backend = phase_peaks(TorchBackend)(ours, info, options)
    pixels = pixels.cpu()
    video = SimpleNamespace(pixel_values=pixels, grid_thw=grid)
    config = GenerationConfig(max_new_tokens=decode_tokens, prefill_chunk=args.prefill_chunk,
                              vision_chunk=args.vision_chunk, stop_at_eos=False)
    start = time.perf_counter()
    # warm-up on the measured inputs, as transformers' is (its `generate` runs twice on them first): kernel
    # selection, allocator segments and compiled shapes of the full-size vision, prefill and decode exist before
    # timing
    generate(backend, [ids], video, replace(config, max_new_tokens=4))
    warmup_s = time.perf_counter() - start
    backend.allocate(1, 1)  # free the warm-up cache before measuring the peak
    _reset_peak(device)
    backend.phases, backend.snapshot = {}, args.snapshot and torch.device(device).type == "cuda"
    if backend.snapshot:
        torch.cuda.memory._record_memory_history(max_entries=200000)
    tm = generate(backend, [ids], video, config).timings
    if backend.snapshot:
        torch.cuda.memory._record_memory_history(enabled=None)
    peak = max([_peak_gb(device)] + [v for k, v in backend.phases.items() if k != "at_prefill_start"])
    out = {"ttft_s": tm["ttft_s"], "decode_tok_s": tm["decode_tokens"] / tm["decode_s"],
           "vision_ms_per_frame": 1000 * tm["vision_s"] / frames, "prefill_tok_s": len(ids) / tm["prefill_s"],
           "vision_s": tm["vision_s"], "prefill_s": tm["prefill_s"], "decode_s": tm["decode_s"],
           "decode_tokens": tm["decode_tokens"], "warmup_s": warmup_s, "peak_gb": peak,
           "kernel": backend.fast.kernel is not None, "cuda_graph": backend.graphed is not None,
           "vision_chunk": args.vision_chunk, "prefill_chunk": args.prefill_chunk,
           "phase_gb": dict(backend.phases),
           "largest_at_prefill_start": getattr(backend, "largest_at_prefill_start", None),
           "split_prefill": backend.fast.split_prefill, "setting": OURS_SETTINGS[setting],
           "gemv": getattr(backend.fast.linear, "choice", None)
           and {" ".join(map(str, k)): v for k, v in backend.fast.linear.choice.items()},
           "vision_compiled": backend.compile,
           "flash_decode": backend.fast.flash, "fused_decode": backend.fast.decode_ops is not None,
           "pdl": backend.fast.decode_ops is not None and backend.fast.decode_ops.pdl}
    out["setup_s"] = tm.get("setup_s")
    if backend.graphed is not None:
        out.update(decode_graph_profile(backend.graphed, len(ids), args.profile))
    if args.profile and torch.device(device).type == "cuda":
        try:
            out["ttft_profile"] = profile_ttft(backend, ids, video, config)
        except Exception as e:  # an extra, as the decode profile: its failure leaves the timings
            out["ttft_profile_error"] = f"{type(e).__name__}: {e}"[:300]
    return out


def bench_transformers(hf, ids, pixels, grid, decode_tokens, device, setting: str) -> dict:
    """transformers' generate: time for 1 token (time to first token) and for n; decode rate from the difference."""
    inputs = {"input_ids": torch.tensor([ids], device=device),
              "attention_mask": torch.ones(1, len(ids), dtype=torch.long, device=device),
              "pixel_values_videos": pixels.to(device), "video_grid_thw": torch.tensor([grid], device=device)}
    extra = {"cache_implementation": "static"} if setting == "static" else {}

    def run(n):
        _sync(device)
        start = time.perf_counter()
        with torch.no_grad():
            hf.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False, **extra)
        _sync(device)
        return time.perf_counter() - start

    start = time.perf_counter()
    try:
        run(2)  # warm-up (and, for the static cache, compilation)
        warmup_s = time.perf_counter() - start
        _reset_peak(device)
        first, full = run(1), run(decode_tokens)
    except Exception as e:  # recorded, so one failing setting leaves the others' numbers
        return {"error": f"{type(e).__name__}: {e}"[:500]}
    rate = (decode_tokens - 1) / (full - first) if full > first else float("nan")  # nan: lost in timing noise
    return {"ttft_s": first, "decode_tok_s": rate, "peak_gb": _peak_gb(device),
            "decode_tokens": decode_tokens, "warmup_s": warmup_s}


def _no_nan(obj):
    """NaN (not measured on this device) as JSON null."""
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_no_nan(v) for v in obj]
    return None if isinstance(obj, float) and obj != obj else obj


def _row(name, r):
    if "error" in r:
        return f"| {name} | error: {r['error'][:120]} | | |"
    return f"| {name} | {r['ttft_s']:.3f} | {r['decode_tok_s']:.1f} | {r['peak_gb']:.2f} |"


def _settings(r: dict, prefix: str) -> list:
    """The measured settings (dicts) of one context whose names start with `prefix`."""
    return [v for k, v in r.items() if k.startswith(prefix) and isinstance(v, dict)]


def ratios(r: dict) -> dict:
    """Ours against transformers' best setting (decode: fastest; TTFT and peak: that of the default)."""
    hf = [v for v in _settings(r, "transformers_") if "error" not in v]
    if not hf:
        return {}
    # a decode rate lost in timing noise is NaN: the best is taken over the measured ones
    measured = [v for v in hf if v["decode_tok_s"] == v["decode_tok_s"]] or hf
    best = max(measured, key=lambda v: v["decode_tok_s"])
    ours = max(_settings(r, "ours"), key=lambda v: v["decode_tok_s"])
    ttft = min(v["ttft_s"] for v in hf)
    peak = min(v["peak_gb"] for v in hf)
    nan = float("nan")
    return {"decode_vs_best_hf": ours["decode_tok_s"] / best["decode_tok_s"],
            "ttft_vs_best_hf": ours["ttft_s"] / ttft if ttft else nan,
            "peak_vs_lowest_hf": ours["peak_gb"] / peak if peak == peak and peak else nan}


def bench_context(cfg, hf, ours, context, bandwidth, args) -> dict:
    # patches on the host, as a decoded video's are: ours copies each vision chunk; transformers gets them on the
    # device for its run only (so neither peak holds the other's input)
    ids, pixels, grid, frames = synthetic_inputs(cfg, context, args.frame_side, "cpu", getattr(torch, args.dtype))
    r = {"context": context, "tokens": len(ids), "frames": frames}
    for setting in filter(None, args.ours_settings.split(",")):
        name = "ours" if setting == "graph" else f"ours_{setting}"
        if setting not in OURS_SETTINGS:
            raise ValueError(f"--ours-settings {setting!r}: expected some of {sorted(OURS_SETTINGS)}")
        r[name] = bench_ours(ours, cfg, ids, pixels, grid, frames, args.decode_tokens, args.device, args, setting)
    for setting in filter(None, args.hf_settings.split(",")):
        n = args.hf_static_tokens if setting == "static" else args.decode_tokens
        r[f"transformers_{setting}"] = bench_transformers(hf, ids, pixels, grid, n, args.device, setting)
    r["decode_bytes"] = decode_bytes(cfg, ours, len(ids))
    r["roofline_tok_s"] = roofline_tok_s(cfg, ours, len(ids), bandwidth)
    best = max(v["decode_tok_s"] for v in _settings(r, "ours"))
    r["ours_vs_roofline"] = best / r["roofline_tok_s"]
    r.update(ratios(r))
    # time to first token if every unavoidable matrix product ran at this GPU's bf16 product rate, nothing else
    r["ttft_flops"] = ttft_flops(cfg, len(ids), grid)
    r["ttft_floor_s"] = sum(r["ttft_flops"].values()) / args.matmul_flops_per_s
    hf_ttft = [v["ttft_s"] for v in _settings(r, "transformers_") if "ttft_s" in v]
    r["ttft_floor_vs_best_hf"] = r["ttft_floor_s"] / min(hf_ttft) if hf_ttft else float("nan")
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="2b", help="2b, 7b or tiny")
    ap.add_argument("--contexts", default="32k")
    ap.add_argument("--decode-tokens", type=int, default=128)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16", help="bfloat16, float16 or float32")
    ap.add_argument("--frame-side", type=int, default=448, help="frame side in pixels (448: 256 tokens per slice)")
    ap.add_argument("--prefill-chunk", type=int, default=4096)
    ap.add_argument("--vision-chunk", type=int, default=64, help="temporal slices per vision call")
    ap.add_argument("--profile", action="store_true",
                    help="list the decode graph's kernels and those of vision and prefill (torch.profiler)")
    ap.add_argument("--hf-settings", default="default,static", help="transformers settings to compare: default, static")
    ap.add_argument("--hf-static-tokens", type=int, default=16,
                    help="tokens for transformers' static cache (it may recompile every step)")
    ap.add_argument("--ours-settings", default="graph",
                    help=f"ours, comma-separated: {', '.join(OURS_SETTINGS)} "
                         "(graph: CUDA graph; compile: plus torch.compile)")
    ap.add_argument("--no-cuda-graph", action="store_true")
    ap.add_argument("--kernel-lib", default=None,
                    help="libvideorope_kernel.so for the prefill rotation (build-plugin --kernel-only)")
    ap.add_argument("--snapshot", action="store_true", help="list the largest live allocations when prefill starts")
    ap.add_argument("--out", default="bench-out")
    args = ap.parse_args(argv)

    from videorope_trt.runtime.benchmark import parse_contexts

    cfg = model_config(args.model)
    hf, ours = build_models(cfg, args.device, getattr(torch, args.dtype))
    bandwidth = copy_bandwidth(args.device)
    args.matmul_flops_per_s = matmul_flops_per_s(args.device) if args.device.startswith("cuda") else float("nan")
    meta = {**run_meta("bench_runtime.py", argv, args.device), "matmul_flops_per_s": args.matmul_flops_per_s,
            "model": args.model, "dtype": args.dtype, "copy_bandwidth_Bps": bandwidth,
            "kernel_lib": args.kernel_lib}
    results = []
    for context in parse_contexts(args.contexts):
        r = bench_context(cfg, hf, ours, context, bandwidth, args)
        results.append(r)
        # after every context: a cut-short run keeps what it measured
        write_json(Path(args.out) / "bench_runtime.json", _no_nan({**meta, "results": results}))
        print(f"\n{args.model} {context} tokens ({r['frames']} frames), roofline {r['roofline_tok_s']:.1f} tok/s, "
              f"ours at {100 * r['ours_vs_roofline']:.0f}% of it; vs transformers: "
              + ", ".join(f"{k} {v:.2f}" for k, v in r.items() if k.endswith("_hf"))
              + f"; TTFT floor {r['ttft_floor_s']:.3f} s ({r['ttft_floor_vs_best_hf']:.2f} of transformers')"
              + "\n| setting | TTFT s | decode tok/s | peak GB |\n|---|---|---|---|")
        for key in [k for k, v in r.items() if isinstance(v, dict) and "ttft_s" in v]:
            print(_row(key, r[key]))
        for key, v in r.items():
            if isinstance(v, dict) and "graph_step_ms" in v:
                print(f"{key}: vision {v['vision_s']:.3f} s, setup {v['setup_s']:.3f} s, "
                      f"prefill {v['prefill_s']:.3f} s, decode graph step "
                      f"{v['graph_step_ms']:.3f} ms ({1000 / v['graph_step_ms']:.0f} tok/s), kernels/step "
                      f"{v.get('kernels_per_step', '-')}, kernel ms/step {v.get('kernel_ms_per_step', '-')}")
                for phase, p in v.get("ttft_profile", {}).items():
                    if phase == "host_ms_unprofiled":
                        print("  host ms (unprofiled): " + ", ".join(f"{k} {ms:.1f}" for k, ms in p.items()))
                        continue
                    by_kind = sorted(p["by_kind_ms"].items(), key=lambda kv: -kv[1])
                    print(f"  {phase} (profiled): wall {p['wall_ms']:.1f} ms, kernels {p['kernel_ms']:.1f} ms: "
                          + ", ".join(f"{k} {ms:.1f}" for k, ms in by_kind))
                    print("    host: " + "; ".join(f"{h['name'][:40]} x{h['count']} {h['self_cpu_ms']:.1f} ms"
                                               for h in p.get("host_top", [])[:10]))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
