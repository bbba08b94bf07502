"""The one-row products' configs measured in the real decode step rather than alone: the fused, CUDA-graphed step
of our PyTorch backend, with the autotuner's pick for one product shape replaced by each of `gemv.CONFIGS` in turn
(every other shape keeps its pick), and the deep products' step config (`gemv.DEEP_STEP_CONFIG`, not autotuned)
by each of them too, in rounds, against the step as it is.

The autotuner times each kernel alone with the L2 cache flushed; in the step each kernel is a programmatic
dependent launch whose first weight tiles are read while the kernel before it ends, which it does not see (the
decode attention's configs were chosen in the step for that reason: `flash_decode.STEP_CONFIGS`).

    python -m bench.bench_gemv_step --model 2b --context 32k --out bench-out        # on the GPU
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

from bench.bench_flash_decode import step_ms
from bench.bench_runtime import build_models, decode_bytes, model_config
from bench.profiling import copy_bandwidth, run_meta, write_json


def _kernels() -> dict:
    """name → the autotuned Triton kernels of the fused step's products (their `.cache`: key → config)."""
    from videorope_trt.runtime.kernels import gemv, rope_cache

    return {"gemv": gemv._kernel(), "qkv": rope_cache._kernel()}


def _shape(name: str, key: tuple) -> str:
    return f"{name}{tuple(k for k in key if not isinstance(k, str))}"  # the key's sizes and flags, not its dtypes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="2b", help="2b or 7b")
    ap.add_argument("--context", default="32k")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="bench-out")
    args = ap.parse_args(argv)
    from videorope_trt.runtime.backends import ModelInfo
    from videorope_trt.runtime.backends.torch.backend import TorchBackend, TorchOptions
    from videorope_trt.runtime.benchmark import parse_contexts
    from videorope_trt.runtime.kernels import gemv

    cfg = model_config(args.model)
    _, ours = build_models(cfg, "cuda", torch.bfloat16)
    context = parse_contexts(args.context)[0]
    roof_ms = 1000 * decode_bytes(cfg, ours, context) / copy_bandwidth("cuda")
    backend = TorchBackend(ours, ModelInfo.from_config(cfg, "m_rope"), TorchOptions(device="cuda", compile=False))
    capacity = context + 4
    backend.allocate(1, capacity)
    step_ms(backend, context, capacity, {})  # every shape tuned as usual
    picks = {(name, key): cfg for name, k in _kernels().items() for key, cfg in k.cache.items()}
    deep = gemv.DEEP_STEP_CONFIG
    picks[("deep", ())] = gemv.autotune_configs((deep,))[0]
    tries = [(None, None)] + [(shape, c) for shape in picks for c in gemv.autotune_configs()]
    times = {i: [] for i in range(len(tries))}
    for _ in range(args.rounds):
        for i, (shape, config) in enumerate(tries):
            if shape is not None and shape[0] == "deep":  # gemv reads it at each call
                gemv.DEEP_STEP_CONFIG = (config.kwargs["BLOCK_N"], config.kwargs["BLOCK_K"], config.num_warps)
            elif shape is not None:
                _kernels()[shape[0]].cache[shape[1]] = config
            times[i].append(step_ms(backend, context, capacity, {}))
            gemv.DEEP_STEP_CONFIG = deep
            if shape is not None and shape[0] != "deep":
                _kernels()[shape[0]].cache[shape[1]] = picks[shape]
    results = []
    for i, (shape, config) in enumerate(tries):
        ms = statistics.median(times[i])
        row = {"shape": "as in use" if shape is None else _shape(*shape), "config": str(config),
               "config_in_use": "" if shape is None else str(picks[shape]), "step_ms": times[i], "median_ms": ms,
               "of_roofline": roof_ms / ms}
        results.append(row)
        print(f"| {row['shape']} | {row['config']} | {ms:.3f} ({', '.join(f'{t:.3f}' for t in times[i])}) | "
              f"{100 * roof_ms / ms:.1f} % |{' (in use)' if str(config) == row['config_in_use'] else ''}",
              flush=True)
    meta = {**run_meta("bench_gemv_step.py", argv), "model": args.model, "context": context}
    write_json(Path(args.out) / "bench_gemv_step.json", {**meta, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
