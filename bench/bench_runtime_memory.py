"""Runtime memory on one GPU: flat vision memory over video length, and a Jetson memory budget simulated.

    python -m bench.bench_runtime_memory vision --minutes 1,10,30,120 --out bench-out   # 1 fps, 224 px frames
    python -m bench.bench_runtime_memory jetson --target orin-nx-16gb --out bench-out  # cap, plan, run, compare

`vision`: a Qwen2-VL-2B-shaped model (random weights) encodes synthetic videos of growing length through
`generate.encode_video` (`--vision-chunk` temporal slices per call); the peak device memory minus the weights
and the visual embeddings it returns is the encoder's working memory, which must not grow with the length.
transformers' vision tower called once on the whole video is measured beside it for the shorter videos.

`jetson`: the memory plan (`runtime.plan.plan_memory`, runtime "torch": a tied lm_head shared with the embedding,
last-position logits) of the model on a Jetson preset gives a budget, a context and a frame count; torch's
allocator is capped to the budget less the CUDA context's share (`torch.cuda.set_per_process_memory_fraction`),
and generation over that many frames with that KV cache must run to the end; its peak is compared with what the
plan counts for the allocator (total less CUDA overhead and the TensorRT workspace, neither of which torch
allocates). The allocator runs with `PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True` unless the variable is
already set (the setting used is recorded): on unified memory the reserved peak is what the system sees, and
expandable segments keep it near the allocated peak.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from bench.bench_runtime import CONFIGS, build_models, model_config
from bench.profiling import run_meta, write_json

GB = 1e9
ALLOC_CONF = "PYTORCH_CUDA_ALLOC_CONF"
JETSON_ALLOC_CONF = "expandable_segments:True"


class Mem:
    """torch.cuda's memory counters, or zeros on the CPU (where this script only checks that it runs)."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"

    def reset(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def allocated(self) -> int:
        return torch.cuda.memory_allocated() if self.cuda else 0

    def peak(self) -> int:
        return torch.cuda.max_memory_allocated() if self.cuda else 0

    def peak_reserved(self) -> int:
        return torch.cuda.max_memory_reserved() if self.cuda else 0

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()


class CyclingPatches:
    """(rows, width) patch rows served from a small pool on the device: content does not change memory, and a
    2-hour video's patches (4 GB a minute at 448 px) never exist at once."""

    def __init__(self, rows: int, width: int, pool_rows: int, device):
        self.shape = (rows, width)
        self.pool = torch.randn(pool_rows, width, device=device)

    def __getitem__(self, index):
        start, stop, _ = index.indices(self.shape[0])
        n, p = stop - start, self.pool.shape[0]
        if n > p:
            raise ValueError(f"CyclingPatches: a slice of {n} rows exceeds the pool of {p}")
        offset = start % p
        if offset + n <= p:
            return self.pool[offset : offset + n]
        return torch.cat([self.pool[offset:], self.pool[: n - (p - offset)]])


def _backend(ours, cfg, device):
    from videorope_trt.runtime.backends import ModelInfo
    from videorope_trt.runtime.backends.torch.backend import TorchBackend, TorchOptions

    return TorchBackend(ours, ModelInfo.from_config(cfg, "m_rope"), TorchOptions(device=device, compile=False))


def _weights_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def bench_vision(args) -> dict:
    from videorope_trt.runtime.generate import encode_video

    cfg, device, mem = model_config(args.model), args.device, Mem(args.device)
    hf, ours = build_models(cfg, device, getattr(torch, args.dtype))
    backend = _backend(ours, cfg, device)
    v = cfg["vision_config"]
    p, m, tp = v["patch_size"], v["spatial_merge_size"], v["temporal_patch_size"]
    side = max(m, args.frame_side // p // m * m)
    per_slice, width = side * side, 3 * tp * p * p
    weights = mem.allocated()
    encode_video(backend, CyclingPatches(per_slice, width, per_slice, device), (1, side, side))  # warm-up
    rows = []
    for minutes in [float(x) for x in args.minutes.split(",")]:
        t = max(1, int(minutes * 60 * args.fps) // tp)
        pixels = CyclingPatches(t * per_slice, width, args.vision_chunk * per_slice, device)
        mem.reset()
        base = mem.allocated()
        start = time.perf_counter()
        out = encode_video(backend, pixels, (t, side, side), args.vision_chunk)
        mem.sync()
        seconds = time.perf_counter() - start
        peak = mem.peak()
        out_bytes = out.numel() * out.element_size()
        row = {"minutes": minutes, "frames": t * tp, "patches": t * per_slice, "tokens": out.shape[0],
               "seconds": seconds, "ms_per_frame": 1000 * seconds / (t * tp), "peak_gb": peak / GB,
               "embeddings_gb": out_bytes / GB, "working_gb": (peak - base - out_bytes) / GB}
        del out
        if t * per_slice <= args.oneshot_max_patches:
            row["transformers_oneshot"] = _oneshot(hf, pixels, (t, side, side), device, mem)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {"model": args.model, "frame_side": args.frame_side, "fps": args.fps, "vision_chunk": args.vision_chunk,
            "weights_gb": weights / GB, "rows": rows}


def _oneshot(hf, pixels, grid, device, mem) -> dict:
    """transformers' vision tower over the whole video in one call (as its generate does)."""
    pool = pixels.pool.shape[0]
    pv = torch.cat([pixels[s : min(s + pool, pixels.shape[0])] for s in range(0, pixels.shape[0], pool)])
    pv = pv.to(hf.dtype)
    mem.reset()
    base = mem.allocated()
    try:
        with torch.no_grad():
            out = hf.model.visual(pv, grid_thw=torch.tensor([grid], device=device)).pooler_output
        mem.sync()
    except torch.OutOfMemoryError as e:
        return {"error": f"out of memory: {e}"[:200]}
    peak = mem.peak()
    return {"peak_gb": peak / GB, "working_gb": (peak - base - out.numel() * out.element_size()) / GB}


def bench_jetson(args) -> dict:
    from types import SimpleNamespace

    from videorope_trt.build.plan import PlanRequest, plan_memory
    from videorope_trt.runtime.generate import GenerationConfig, generate

    cfg, device, mem = CONFIGS[args.model], "cuda", Mem("cuda")
    plan = plan_memory(f"qwen2-vl-{args.model}", args.target, PlanRequest(
        precision="bf16", kv_precision="bf16", max_context=args.max_context, max_frames=args.max_frames,
        runtime="torch"))
    total = torch.cuda.get_device_properties(0).total_memory
    cap = plan.budget_bytes - plan.overhead_bytes  # the CUDA context lives outside torch's allocator
    torch.cuda.set_per_process_memory_fraction(cap / total)
    hf, ours = build_models(cfg, device, torch.bfloat16)
    backend = _backend(ours, cfg, device)
    v = cfg["vision_config"]
    p, m, tp = v["patch_size"], v["spatial_merge_size"], v["temporal_patch_size"]
    side = plan.frame_size[0] // p // m * m
    t = plan.max_frames // tp
    tokens = t * side * side // m**2
    ids = list(range(100, 120)) + [cfg["vision_start_token_id"]] + [cfg["video_token_id"]] * tokens + \
        [cfg["vision_end_token_id"]] + list(range(200, 220))
    patches = CyclingPatches(t * side * side, 3 * tp * p * p, plan.frames_per_chunk // tp * side * side, device)
    video = SimpleNamespace(pixel_values=patches, grid_thw=(t, side, side))
    config = GenerationConfig(max_new_tokens=args.decode_tokens, prefill_chunk=plan.prefill_chunk,
                              vision_chunk=plan.frames_per_chunk // tp, max_context=plan.max_context, stop_at_eos=False)
    mem.reset()
    result = {"target": args.target, "model": args.model, "plan": plan.to_dict(), "cap_bytes": cap,
              "prompt_tokens": len(ids), "frames": t * tp}
    try:
        tm = generate(backend, [ids], video, config).timings
        result.update(ran=True, timings=tm)
    except torch.OutOfMemoryError as e:
        result.update(ran=False, error=f"out of memory: {e}"[:300])
    planned = plan.total_bytes - plan.overhead_bytes - plan.workspace_bytes
    peak, reserved = mem.peak(), mem.peak_reserved()
    result.update(planned_allocator_bytes=planned, peak_allocated_bytes=peak, peak_reserved_bytes=reserved,
                  weights_bytes=_weights_bytes(ours), peak_vs_plan=peak / planned, reserved_vs_plan=reserved / planned,
                  expandable_segments_in_use=any(seg.get("is_expandable", False)
                                                 for seg in torch.cuda.memory_snapshot()))
    print(json.dumps({k: v for k, v in result.items() if k != "plan"}), flush=True)
    return result


COMMANDS = {"vision": bench_vision, "jetson": bench_jetson}


def _allocator_setting(what: str) -> dict:
    """The caching allocator's settings this run uses: the user's PYTORCH_CUDA_ALLOC_CONF if set, else for
    `jetson` expandable segments (set here), else torch's defaults."""
    given = os.environ.get(ALLOC_CONF)
    if given is not None:
        return {ALLOC_CONF: given, "set_by": "user"}
    if what == "jetson":
        os.environ[ALLOC_CONF] = JETSON_ALLOC_CONF
        return {ALLOC_CONF: JETSON_ALLOC_CONF, "set_by": "bench"}
    return {ALLOC_CONF: None, "set_by": "torch default"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=sorted(COMMANDS))
    ap.add_argument("--model", default="2b", help="2b, 7b (tiny: vision on the CPU, a check that it runs)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--minutes", default="1,10,30,120", help="vision: video lengths in minutes")
    ap.add_argument("--fps", type=float, default=1.0)
    ap.add_argument("--frame-side", type=int, default=224)
    ap.add_argument("--vision-chunk", type=int, default=8)
    ap.add_argument("--oneshot-max-patches", type=int, default=80_000, help="vision: largest one-call comparison")
    ap.add_argument("--target", default="orin-nx-16gb", help="jetson: the preset whose budget is simulated")
    ap.add_argument("--max-context", type=int, default=None, help="jetson: context to plan (default: the preset's)")
    ap.add_argument("--max-frames", type=int, default=None, help="jetson: frames to plan (default: the preset's)")
    ap.add_argument("--decode-tokens", type=int, default=32)
    ap.add_argument("--out", default="bench-out")
    args = ap.parse_args(argv)
    allocator = _allocator_setting(args.what)  # before anything touches CUDA: the allocator reads it once
    if not torch.cuda.is_available() and (args.what == "jetson" or args.device != "cpu"):
        print("bench_runtime_memory: needs a CUDA GPU (vision runs on the CPU with --device cpu)", file=sys.stderr)
        return 2
    result = COMMANDS[args.what](args)
    meta = {**run_meta("bench_runtime_memory.py", argv), "allocator": allocator}
    name = f"memory_{args.what}_{args.model}"
    if args.what == "jetson":
        name += f"_{args.target}_{args.max_context or 'default'}"
    write_json(Path(args.out) / f"{name}.json", {**meta, **result}, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
