"""Vision encoding time: transformers' stock tower (one SDPA call per temporal slice and layer) vs the tower every
path runs (`models/vision_tower.VisionTower`: a grid's slices as one batch, one SDPA call per layer), eager and
torch.compile'd.

The Qwen2-VL-2B / -7B vision tower (`bench_runtime.CONFIGS`, random weights), the video that fills a context as
`bench_runtime` builds it (448×448 frames: 32×32 patches per temporal slice), encoded in calls of `--vision-chunk`
slices as the runtime does, with the stock tower (`visual(...)`) and with `VisionTower` ("tower"; on a GPU
"tower_compile" and "tower_compile_tuned"), in the same process on the same weights and patches; `--profile` lists
the kernels of one pass of each compiled form. Patches are on the device before timing (host copies are not
measured). CUDA events; one warm-up pass each first.

    python -m bench.bench_vision_attention --model 2b --contexts 32k --out bench-out      # on the GPU
    python -m bench.bench_vision_attention --model tiny --device cpu --dtype float32 --contexts 600 --repeats 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from bench.bench_runtime import model_config, synthetic_inputs
from bench.profiling import device_ms, kernels, run_meta, write_json


def build_tower(cfg: dict, device, dtype):
    from transformers import Qwen2VLConfig
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel

    torch.manual_seed(0)
    config = Qwen2VLConfig(**{k: v for k, v in cfg.items() if k != "videorope_trt"})
    config.vision_config._attn_implementation = "sdpa"
    with torch.device(device):
        return Qwen2VisionTransformerPretrainedModel._from_config(config.vision_config, dtype=dtype).eval()


def encoders(visual, device) -> dict:
    from videorope_trt.models.vision_tower import VisionTower

    out = {"stock_per_slice": lambda px, g: visual(px, grid_thw=g).pooler_output, "tower": VisionTower(visual)}
    if torch.device(device).type == "cuda":
        out["tower_compile"] = VisionTower(visual, compile=True, compile_options=None)
        # the runtime's form: inductor's coordinate-descent search over its kernels' block sizes
        out["tower_compile_tuned"] = VisionTower(visual, compile=True)
    return out


def profile(encode, pixels, grid, chunk: int, top: int = 15) -> list:
    """The heaviest kernels of one encoding pass (device time, ms)."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        encode_video(encode, pixels, grid, chunk)
        torch.cuda.synchronize()
    rows = kernels(prof)
    return [{"total_kernel_ms": sum(map(device_ms, rows))}] + [{"name": e.key[:100], "count": e.count,
                                                                "ms": device_ms(e)} for e in rows[:top]]


def _timer(device):
    """() -> stop() -> seconds: CUDA events on the GPU, the host clock elsewhere."""
    if torch.device(device).type == "cuda":
        def start():
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            return lambda: (b.record(), b.synchronize(), a.elapsed_time(b) / 1000)[-1]
        return start
    def start_host():
        t0 = time.perf_counter()
        return lambda: time.perf_counter() - t0
    return start_host


def encode_video(encode, pixels, grid, chunk: int):
    """Every call of `chunk` slices, as the runtime splits a video; the embeddings of all calls."""
    t, h, w = grid
    per_slice = h * w
    outs = []
    for first in range(0, t, chunk):
        n = min(chunk, t - first)
        g = torch.tensor([[n, h, w]], device=pixels.device)
        outs.append(encode(pixels[first * per_slice:(first + n) * per_slice], g))
    return torch.cat(outs)


def bench_context(visual, cfg, context: int, args) -> dict:
    dtype = getattr(torch, args.dtype)
    _, pixels, grid, frames = synthetic_inputs(cfg, context, args.frame_side, args.device, dtype)
    r = {"context": context, "grid_thw": list(grid), "frames": frames, "vision_chunk": args.vision_chunk}
    timer, outs = _timer(args.device), {}
    with torch.no_grad():
        for name, encode in encoders(visual, args.device).items():
            outs[name] = encode_video(encode, pixels, grid, args.vision_chunk)  # warm-up (kernel selection, allocator)
            times = []
            for _ in range(args.repeats):
                stop = timer()
                encode_video(encode, pixels, grid, args.vision_chunk)
                times.append(stop())
            r[name] = {"s": statistics.median(times), "all_s": times,
                       "ms_per_frame": 1000 * statistics.median(times) / frames}
            print(f"{context} tokens, {name}: {r[name]['s']:.4f} s ({times})", flush=True)
        for name in ("tower_compile", "tower_compile_tuned") if args.profile else ():
            if name in outs:
                r[f"profile_{name}"] = profile(encoders(visual, args.device)[name], pixels, grid, args.vision_chunk)
    ref = outs["stock_per_slice"].float()
    for name, out in outs.items():
        r[f"rel_err_{name}_vs_stock"] = float((out.float() - ref).norm() / ref.norm())
        r[f"speedup_{name}"] = r["stock_per_slice"]["s"] / r[name]["s"]
    r["speedup"] = r["speedup_tower"]
    return r


def main(argv=None) -> int:
    from videorope_trt.runtime.benchmark import parse_contexts

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="2b", help="2b, 7b or tiny")
    ap.add_argument("--contexts", default="32k")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16", help="bfloat16, float16 or float32")
    ap.add_argument("--frame-side", type=int, default=448, help="frame side in pixels (448: 256 tokens per slice)")
    ap.add_argument("--vision-chunk", type=int, default=64, help="temporal slices per vision call")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="list the kernels of one pass of each compiled form")
    ap.add_argument("--out", default="bench-out")
    args = ap.parse_args(argv)

    cfg = model_config(args.model)
    visual = build_tower(cfg, args.device, getattr(torch, args.dtype))
    import transformers

    meta = {**run_meta("bench_vision_attention.py", argv, args.device), "model": args.model, "dtype": args.dtype,
            "transformers": transformers.__version__}
    results, path = [], Path(args.out) / "bench_vision_attention.json"
    for context in parse_contexts(args.contexts):
        results.append(bench_context(visual, cfg, context, args))
        write_json(path, {**meta, "results": results})  # after every context: a cut-short run keeps what it measured
        r = results[-1]
        print(f"{args.model} {context} tokens ({r['frames']} frames, grid {r['grid_thw']}, {args.vision_chunk}-slice "
              f"calls): stock {r['stock_per_slice']['s']:.3f} s; " + "; ".join(
                  f"{k[8:]} {r[k[8:]]['s']:.3f} s ({r[k]:.2f}x, rel err {r[f'rel_err_{k[8:]}_vs_stock']:.1e})"
                  for k in r if k.startswith("speedup_")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
