"""The decode step alone: one CUDA-graph replay of our PyTorch backend's step at a given cache length, against the
bandwidth roofline, for each decode setting, without vision, prefill or transformers (those are bench_runtime's).

The cache is allocated for the context and the graph replayed with the cache position at its end, so every step
reads every weight and the whole cache, as the last token of a generation over that context does (the cache holds
zeros: the time does not depend on the values). Roofline = the step's bytes (`bench_runtime.decode_bytes`) at the
copy bandwidth measured in the same run.

    python -m bench.bench_decode_step --model 2b --contexts 8k,32k --out bench-out        # on the GPU
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from bench.bench_runtime import build_models, decode_bytes, model_config
from bench.profiling import chosen, copy_bandwidth, run_meta, write_json
from bench.runtime_probes import decode_graph_profile

#: setting → (TorchBackend options, the decode ops the step runs): the fused step with and without programmatic
#: dependent launch, and the layer-by-layer step (what batch > 1 runs), compiled
SETTINGS = {"fused": ({}, {"pdl": None}), "fused_nopdl": ({}, {"pdl": False}),
            "layer_by_layer": ({"compile": True}, None)}


#: steps of the decode loop timed per setting (greedy, with the device-side bookkeeping of `decode_loop.Feed`)
LOOP_STEPS = 64


def loop_step_ms(backend, graph_feed: bool) -> float:
    """ms per token of `decode_loop.decode`'s inner loop (the feed, then the backend's step), without read-backs:
    the graph step plus what runs between two replays."""
    from videorope_trt.runtime.decode_loop import Feed
    from videorope_trt.runtime.sampling import Sampler

    feed = Feed(Sampler(), 1, LOOP_STEPS + 3, 0, "cuda", graph=graph_feed)
    logits = torch.zeros(1, backend.info.vocab_size, device="cuda")
    for _ in range(3):  # the feed is captured at its second step on the graph's logits
        logits = backend.decode_step(feed(logits))
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(LOOP_STEPS):
        logits = backend.decode_step(feed(logits))
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / LOOP_STEPS


def step_times(ours, cfg, context: int, settings: list, profile: bool) -> dict:
    from videorope_trt.runtime.backends import ModelInfo
    from videorope_trt.runtime.backends.torch.backend import TorchBackend, TorchOptions
    from videorope_trt.runtime.backends.torch.static_decoder import DecodeOps

    info = ModelInfo.from_config(cfg, "m_rope")
    out = {}
    for name in settings:
        options, ops = SETTINGS[name]
        backend = TorchBackend(ours, info, TorchOptions(device="cuda", **{"compile": False, **options}))
        backend.decode_ops = None if ops is None else DecodeOps.triton(**ops)
        # room for the loop's steps; at 8k and 32k the same cache rows (whole SPLITs) as context + 1 would have
        capacity = context + 1 + LOOP_STEPS + 3
        backend.allocate(1, capacity)
        backend.length = context  # as after a prefill of `context` tokens
        full = torch.ones(1, capacity, dtype=torch.int64, device="cuda")
        offset = torch.zeros(backend.num_axes, 1, 1, device="cuda")
        backend.begin_decode(full, offset, 1.0)  # captures the graph
        out[name] = {**decode_graph_profile(backend.graphed, context, profile, replays=200),
                     "fused_decode": backend.fast.decode_ops is not None,
                     "pdl": backend.fast.decode_ops is not None and backend.fast.decode_ops.pdl}
        for graph_feed in (True, False):
            backend.length = context
            backend.begin_decode(full, offset, 1.0)
            out[name][f"loop_step_ms_feed_{'graph' if graph_feed else 'eager'}"] = loop_step_ms(backend, graph_feed)
        backend.allocate(1, 1)  # frees the cache before the next setting's
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="2b", help="2b or 7b")
    ap.add_argument("--contexts", default="8k,32k")
    ap.add_argument("--settings", default=",".join(SETTINGS), help=f"some of {', '.join(SETTINGS)}")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--profile", action="store_true", help="list the step's kernels (torch.profiler)")
    ap.add_argument("--out", default="bench-out")
    args = ap.parse_args(argv)
    from videorope_trt.runtime.benchmark import parse_contexts

    settings = chosen(args.settings, SETTINGS, "--settings")
    cfg = model_config(args.model)
    _, ours = build_models(cfg, "cuda", getattr(torch, args.dtype))
    bandwidth = copy_bandwidth("cuda")
    results = []
    print(f"copy bandwidth {bandwidth / 1e12:.2f} TB/s\n| model | context | setting | step ms | tok/s | % of roofline "
          "| loop ms: feed graphed / eager |")
    for context in parse_contexts(args.contexts):
        roof_ms = 1000 * decode_bytes(cfg, ours, context) / bandwidth
        r = {"context": context, "roofline_ms": roof_ms, **step_times(ours, cfg, context, settings, args.profile)}
        results.append(r)
        for name in settings:
            ms = r[name]["graph_step_ms"]
            r[name]["of_roofline"] = roof_ms / ms
            loops = r[name]["loop_step_ms_feed_graph"], r[name]["loop_step_ms_feed_eager"]
            print(f"| {args.model} | {context} | {name} | {ms:.3f} | {1000 / ms:.0f} | {100 * roof_ms / ms:.1f} % | "
                  f"{loops[0]:.3f} / {loops[1]:.3f} |", flush=True)
    meta = {**run_meta("bench_decode_step.py", argv), "model": args.model, "dtype": args.dtype,
            "copy_bandwidth_Bps": bandwidth}
    write_json(Path(args.out) / "bench_decode_step.json", {**meta, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
