"""Runtime speed on one GPU: our PyTorch backend vs transformers on the same model and the same inputs.

Qwen2-VL-2B- and -7B-shaped models (the real configs, random weights: nothing is downloaded), a synthetic video
filling the context, batch 1. For each context it measures, for ours (static cache, CUDA-graphed decode) and for
transformers' `generate` (default sdpa, and `cache_implementation="static"`): time to first token, decode tokens/s,
peak device memory; plus vision ms per frame and prefill tokens/s for ours, and the decode roofline
((weight bytes + KV bytes read per token) / device copy bandwidth measured in this run).

    python bench/bench_runtime.py --model 2b --contexts 8k,16k,32k,64k --out bench-out     # on the GPU
    python bench/bench_runtime.py --model tiny --device cpu --dtype float32 --contexts 300 --decode-tokens 4 \\
        --hf-settings default --out /tmp/bench                                            # dry run anywhere
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

_COMMON = {"model_type": "qwen2_vl", "hidden_act": "silu", "rms_norm_eps": 1e-6, "rope_theta": 1_000_000.0,
           "max_position_embeddings": 131072, "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
           "bos_token_id": 151643, "eos_token_id": 151645, "vision_start_token_id": 151652,
           "vision_end_token_id": 151653, "vision_token_id": 151654, "image_token_id": 151655,
           "video_token_id": 151656, "use_sliding_window": False}
_VISION = {"depth": 32, "embed_dim": 1280, "hidden_act": "quick_gelu", "mlp_ratio": 4, "num_heads": 16,
           "in_channels": 3, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2}
#: The published Qwen2-VL configs (sizes only).
CONFIGS = {
    "2b": {**_COMMON, "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
           "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True,
           "vision_config": {**_VISION, "hidden_size": 1536}},
    "7b": {**_COMMON, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
           "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064, "tie_word_embeddings": False,
           "vision_config": {**_VISION, "hidden_size": 3584}},
}


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
    ours = VideoRopeQwen2VL(hf, make_rope_settings("m_rope", {}, cfg["rope_theta"], head_dim)).eval()
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
    text = lambda n: rng.integers(100, high, n).tolist()  # noqa: E731
    ids = text(20) + [cfg["vision_start_token_id"]] + [cfg["video_token_id"]] * (t * per_slice) + \
        [cfg["vision_end_token_id"]] + text(context - 22 - t * per_slice)
    pixels = torch.randn(t * side * side, 3 * tp * p * p, generator=torch.Generator().manual_seed(1)).to(device, dtype)
    return ids, pixels, (t, side, side), t * tp


def copy_bandwidth(device) -> float:
    """Device-to-device copy bandwidth, bytes read + written per second."""
    if torch.device(device).type != "cuda":
        return float("nan")
    a = torch.empty(1 << 30, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    b.copy_(a)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        b.copy_(a)
    torch.cuda.synchronize()
    return 2 * a.numel() * 10 / (time.perf_counter() - start)


def roofline_tok_s(cfg: dict, model, context: int, bandwidth: float) -> float:
    """Decode tokens/s if every step read the language model's weights and the whole KV cache once."""
    weights = sum(p.numel() * p.element_size() for n, p in model.hf.named_parameters() if "visual" not in n)
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    kv = 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * head_dim * context * model.dtype.itemsize
    return bandwidth / (weights + kv)


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device):
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gb(device) -> float:
    return torch.cuda.max_memory_allocated() / 1e9 if torch.device(device).type == "cuda" else float("nan")


def bench_ours(ours, cfg, ids, pixels, grid, frames, decode_tokens, device, args) -> dict:
    from types import SimpleNamespace

    from videorope_trt.runtime.backends import ModelInfo
    from videorope_trt.runtime.backends.torch_backend import TorchBackend
    from videorope_trt.runtime.generate import GenerationConfig, generate

    info = ModelInfo.from_config(cfg, "m_rope")
    backend = TorchBackend(ours, info, device, cuda_graph=not args.no_cuda_graph)
    video = SimpleNamespace(pixel_values=pixels, grid_thw=grid)
    config = GenerationConfig(max_new_tokens=decode_tokens, prefill_chunk=args.prefill_chunk,
                              vision_chunk=args.vision_chunk, stop_at_eos=False)
    from videorope_trt.runtime.generate import encode_video

    generate(backend, [ids[:20]], None, GenerationConfig(max_new_tokens=4, stop_at_eos=False))  # warm-up
    encode_video(backend, pixels[: grid[1] * grid[2]], (1, grid[1], grid[2]))
    _reset_peak(device)
    tm = generate(backend, [ids], video, config).timings
    return {"ttft_s": tm["ttft_s"], "decode_tok_s": tm["decode_tokens"] / tm["decode_s"],
            "vision_ms_per_frame": 1000 * tm["vision_s"] / frames, "prefill_tok_s": len(ids) / tm["prefill_s"],
            "vision_s": tm["vision_s"], "prefill_s": tm["prefill_s"], "decode_s": tm["decode_s"],
            "peak_gb": _peak_gb(device)}


def bench_transformers(hf, ids, pixels, grid, decode_tokens, device, setting: str) -> dict:
    """transformers' generate: time for 1 token (time to first token) and for n; decode rate from the difference."""
    inputs = {"input_ids": torch.tensor([ids], device=device), "attention_mask": torch.ones(1, len(ids), dtype=torch.long, device=device),
              "pixel_values_videos": pixels, "video_grid_thw": torch.tensor([grid], device=device)}
    extra = {"cache_implementation": "static"} if setting == "static" else {}

    def run(n):
        _sync(device)
        start = time.perf_counter()
        with torch.no_grad():
            hf.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False, **extra)
        _sync(device)
        return time.perf_counter() - start

    run(2)  # warm-up (and, for the static cache, compilation)
    _reset_peak(device)
    first, full = run(1), run(decode_tokens)
    return {"ttft_s": first, "decode_tok_s": (decode_tokens - 1) / max(full - first, 1e-9), "peak_gb": _peak_gb(device)}


def _no_nan(obj):
    """NaN (not measured on this device) as JSON null."""
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_no_nan(v) for v in obj]
    return None if isinstance(obj, float) and obj != obj else obj


def _row(name, r):
    return (f"| {name} | {r['ttft_s']:.3f} | {r['decode_tok_s']:.1f} | {r['peak_gb']:.2f} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="2b", help="2b, 7b or tiny")
    ap.add_argument("--contexts", default="32k")
    ap.add_argument("--decode-tokens", type=int, default=128)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16", help="bfloat16, float16 or float32")
    ap.add_argument("--frame-side", type=int, default=448, help="frame side in pixels (448: 256 tokens per slice)")
    ap.add_argument("--prefill-chunk", type=int, default=4096)
    ap.add_argument("--vision-chunk", type=int, default=8)
    ap.add_argument("--hf-settings", default="default,static", help="transformers settings to compare: default, static")
    ap.add_argument("--no-cuda-graph", action="store_true")
    ap.add_argument("--out", default="bench-out")
    args = ap.parse_args(argv)

    from videorope_trt.runtime.commands import parse_contexts

    dtype = getattr(torch, args.dtype)
    cfg = model_config(args.model)
    hf, ours = build_models(cfg, args.device, dtype)
    bandwidth = copy_bandwidth(args.device)
    results = []
    for context in parse_contexts(args.contexts):
        ids, pixels, grid, frames = synthetic_inputs(cfg, context, args.frame_side, args.device, dtype)
        r = {"context": context, "tokens": len(ids), "frames": frames,
             "ours": bench_ours(ours, cfg, ids, pixels, grid, frames, args.decode_tokens, args.device, args)}
        for setting in filter(None, args.hf_settings.split(",")):
            r[f"transformers_{setting}"] = bench_transformers(hf, ids, pixels, grid, args.decode_tokens, args.device, setting)
        r["roofline_tok_s"] = roofline_tok_s(cfg, ours, len(ids), bandwidth)
        r["ours_vs_roofline"] = r["ours"]["decode_tok_s"] / r["roofline_tok_s"]
        results.append(r)
        print(f"\n{context} tokens ({frames} frames), roofline {r['roofline_tok_s']:.1f} tok/s, "
              f"ours at {100 * r['ours_vs_roofline']:.0f}% of it\n| setting | TTFT s | decode tok/s | peak GB |\n|---|---|---|---|")
        for key in [k for k in r if k == "ours" or k.startswith("transformers_")]:
            print(_row(key, r[key]))
        sys.stdout.flush()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"model": args.model, "dtype": args.dtype, "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
            "date": time.strftime("%Y-%m-%d"), "copy_bandwidth_Bps": bandwidth, "torch": torch.__version__,
            "command": "python bench/bench_runtime.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    tmp = out / "bench_runtime.json.tmp"
    tmp.write_text(json.dumps(_no_nan({**meta, "results": results}), indent=2) + "\n")
    tmp.replace(out / "bench_runtime.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
