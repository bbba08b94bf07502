"""The decode attention's options A/B in the real decode step: our PyTorch backend's graphed step at a given cache
length, with `flash_decode` called with each set of options in `VARIANTS`, in rounds (every variant once per
round, so a slow spell of the machine touches them all), against the bandwidth roofline.

"no_attention" returns the query as the attention's output: not a result, the step's time without attention, so
that step − it is what attention costs inside the step.

    python -m bench.bench_flash_decode --model 2b --contexts 8k,32k --out bench-out        # on the GPU
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
from pathlib import Path

import torch

from bench.bench_runtime import build_models, decode_bytes, model_config
from bench.profiling import chosen, copy_bandwidth, run_meta, write_json
from bench.runtime_probes import decode_graph_profile

#: variant → flash_decode options (None: no attention at all, see above). The configs, split sizes, L2 prefetch and
#: counted combine measured on the way to the defaults are in docs/benchmark-log.md with the commits that had them.
VARIANTS = {"no_prefetch": {"prefetch": False}, "prefetch": {}, "no_attention": None,
            "split256": {"split_rows": 256},  # the step's form before `flash_decode.step_split`
            # one tile per program, all of it read before the wait: more, shorter programs
            "split128_8w": {"split_rows": 128, "config": (128, 8, 1)},
            "split128_4w": {"split_rows": 128, "config": (128, 4, 1)},
            "split64_4w": {"split_rows": 64, "config": (64, 4, 1)},
            "split64_2w": {"split_rows": 64, "config": (64, 2, 1)},
            "split32_4w": {"split_rows": 32, "config": (32, 4, 1)}}


def _no_attention(q, keys, values, bias, scale, **_):
    return q


def tuned(options) -> list:
    """The autotuner's picks so far (every shape it has seen; grids with a step config are not autotuned)."""
    from videorope_trt.runtime.kernels import flash_decode

    if options is None:
        return []
    kernel = flash_decode._partial_kernel(flash_decode.PARTIAL_CONFIGS)  # as flash_decode makes it (same cache key)
    return [f"{key}: {cfg}" for key, cfg in getattr(kernel, "cache", {}).items()]


def step_ms(backend, context: int, capacity: int, options) -> float:
    from videorope_trt.runtime.kernels import flash_decode

    # the decoder's attention function, which the fused step calls with pdl and the cache position
    attend = _no_attention if options is None else functools.partial(flash_decode.flash_decode, **options)
    backend.fast.decode_attention = attend
    backend.graphed = None  # captured anew with this attention
    backend.length = context
    full = torch.ones(1, capacity, dtype=torch.int64, device="cuda")
    backend.begin_decode(full, torch.zeros(backend.num_axes, 1, 1, device="cuda"), 1.0)
    return decode_graph_profile(backend.graphed, context, False, replays=200)["graph_step_ms"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="2b", help="2b or 7b")
    ap.add_argument("--contexts", default="8k,32k")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"some of {', '.join(VARIANTS)}")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="bench-out")
    args = ap.parse_args(argv)
    from videorope_trt.runtime.backends import ModelInfo
    from videorope_trt.runtime.backends.torch.backend import TorchBackend, TorchOptions
    from videorope_trt.runtime.benchmark import parse_contexts

    variants = chosen(args.variants, VARIANTS, "--variants")
    cfg = model_config(args.model)
    _, ours = build_models(cfg, "cuda", torch.bfloat16)
    bandwidth = copy_bandwidth("cuda")
    info = ModelInfo.from_config(cfg, "m_rope")
    results = []
    print(f"copy bandwidth {bandwidth / 1e12:.2f} TB/s")
    for context in parse_contexts(args.contexts):
        roof_ms = 1000 * decode_bytes(cfg, ours, context) / bandwidth
        backend = TorchBackend(ours, info, TorchOptions(device="cuda", compile=False))
        capacity = context + 4
        backend.allocate(1, capacity)
        times = {v: [] for v in variants}
        for _ in range(args.rounds):
            for v in variants:
                times[v].append(step_ms(backend, context, capacity, VARIANTS[v]))
        backend.allocate(1, 1)
        for v in variants:
            ms = statistics.median(times[v])
            results.append({"context": context, "variant": v, "options": repr(VARIANTS[v]), "step_ms": times[v],
                            "median_ms": ms, "of_roofline": roof_ms / ms, "tuned": tuned(VARIANTS[v])})
            print(f"| {args.model} | {context} | {v} | {ms:.3f} ({', '.join(f'{t:.3f}' for t in times[v])}) | "
                  f"{100 * roof_ms / ms:.1f} % | {results[-1]['tuned'][-1:]} |", flush=True)
    meta = {**run_meta("bench_flash_decode.py", argv), "model": args.model, "copy_bandwidth_Bps": bandwidth}
    write_json(Path(args.out) / "bench_flash_decode.json", {**meta, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
