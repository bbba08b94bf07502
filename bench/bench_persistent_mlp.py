"""Is a grid-wide barrier cheaper than a kernel boundary in the decode step? Every layer's MLP (gate/up with the RMS
norm and SwiGLU, then down with the residual add) for one token, run two ways over the same weights:

  * kernels: two `gemv` launches per layer, programmatic dependent launches, one CUDA graph (the decode step's form);
  * persistent: one kernel for all layers whose programs (one per SM) meet at a grid barrier (an atomic count they
    wait on) between the two products, each program's first weight tiles of the next product read before it waits.

Also the barrier alone (the kernel with no products) and the byte time at the copy bandwidth. Both forms' outputs
are compared with the fp32 reference chain.

    python bench/bench_persistent_mlp.py --models 2b,7b --out bench-out        # on the GPU
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profiling import copy_bandwidth, run_meta, write_json  # noqa: E402

#: (hidden, intermediate) of the decoders (Qwen2-VL-2B, -7B); 28 layers each
SHAPES = {"2b": (1536, 8960), "7b": (3584, 18944)}
LAYERS = 28
#: ((rows, tile width) of gate/up's tiles, of down's tiles) tried: five tiles in flight per program
TILES = {"2b": [((4, 512), (2, 2048)), ((8, 512), (4, 1024)), ((2, 1024), (2, 1024))],
         "7b": [((4, 512), (2, 2048)), ((8, 512), (4, 1024)), ((2, 1024), (2, 1024))]}


def persistent(x, h, g, wgu, wd, bar, eps, tiles, programs, work=True, early=True, warps=8):
    """x (H,) updated in place through every layer; h (M,) scratch; bar an int32 count (zeroed here)."""
    (bn_a, bk_a), (bn_b, bk_b) = tiles
    layers, hidden, inter = wd.shape[0], wd.shape[1], wd.shape[2]
    bar.zero_()
    from persistent_mlp_kernels import mlp_persistent

    mlp_persistent[(programs,)](x, h, g, wgu, wd, bar, layers, hidden, inter, eps, WORK=work, EARLY=early, BN_A=bn_a,
                            BK_A=bk_a, KT_A=-(-hidden // bk_a), BN_B=bn_b, BK_B=bk_b, KT_B=-(-inter // bk_b),
                            SPIN_LIMIT=1 << 14, num_warps=warps)


def chain(x, g, wgu, wd, eps, pdl=True):
    from videorope_trt.runtime.backends.gemv import gemv

    for layer in range(wd.shape[0]):
        h = gemv(x, wgu[layer], norm=g[layer], eps=eps, swiglu=True, pdl=pdl)
        x = gemv(h, wd[layer], residual=x, pdl=pdl)
    return x


def reference(x, g, wgu, wd, eps):
    from videorope_trt.runtime.backends.gemv import gemv_reference

    for layer in range(wd.shape[0]):
        x = gemv_reference(gemv_reference(x, wgu[layer], norm=g[layer], eps=eps, swiglu=True), wd[layer], residual=x)
    return x


def _graph(fn):
    fn()  # compiles and tunes outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


def _ms(graph, replays=50) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    graph.replay()
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / replays


def measure(model: str, rounds: int, programs: int) -> dict:
    hidden, inter = SHAPES[model]
    gen = torch.Generator(device="cuda").manual_seed(0)
    rand = lambda *s, std=1.0: (torch.randn(*s, device="cuda", generator=gen) * std).bfloat16()  # noqa: E731
    wgu, wd = rand(LAYERS, 2 * inter, hidden, std=hidden**-0.5), rand(LAYERS, hidden, inter, std=inter**-0.5 / 4)
    g, x0, eps = 1 + rand(LAYERS, hidden, std=0.1).float().bfloat16(), rand(hidden), 1e-6
    x, h, bar = x0.clone(), torch.empty(inter, dtype=torch.bfloat16, device="cuda"), torch.zeros(1, dtype=torch.int32,
                                                                                                  device="cuda")
    ref = reference(x0, g, wgu, wd, eps).float()
    err = lambda y: ((y.float() - ref).abs().max() / ref.abs().max()).item()  # noqa: E731
    forms = {"kernels": lambda: chain(x0, g, wgu, wd, eps),
             "kernels_no_pdl": lambda: chain(x0, g, wgu, wd, eps, pdl=False)}
    errors = {"kernels": err(chain(x0, g, wgu, wd, eps))}
    variants = {"barriers_only": (TILES[model][0], programs[0], {"work": False})}
    for tiles in TILES[model]:
        for n in programs:
            for warps in (4, 8):
                name = f"persistent_{n}x{warps}w" + "".join(f"_{r}x{k}" for r, k in tiles)
                variants[name] = (tiles, n, {"warps": warps})
    variants[name + "_late"] = (tiles, n, {"warps": warps, "early": False})
    for name, (tiles, n, kw) in variants.items():
        run = functools.partial(lambda tiles, n, kw: (x.copy_(x0), persistent(x, h, g, wgu, wd, bar, eps, tiles,
                                                                             n, **kw)), tiles, n, kw)
        run()
        torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        torch.cuda.synchronize()
        if time.perf_counter() - start > 0.05:  # waits ran out: its programs were not all on the GPU at once
            errors[name] = "not co-resident"
            continue
        errors[name] = err(x) if kw.get("work", True) else None
        errors[name + "_barrier_count"] = int(bar.item())
        forms[name] = run
    graphs = {name: _graph(fn) for name, fn in forms.items()}
    times = {name: [] for name in forms}
    for _ in range(rounds):
        for name, graph in graphs.items():
            times[name].append(_ms(graph))
    ms = {name: statistics.median(v) for name, v in times.items()}
    weight_bytes = (wgu.numel() + wd.numel()) * 2
    return {"model": model, "layers": LAYERS, "programs": programs, "weight_bytes": weight_bytes,
            "ms": ms, "per_layer_us": {k: v * 1000 / LAYERS for k, v in ms.items()}, "max_rel_err": errors}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="2b,7b")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--programs", default="1,2", help="programs of the persistent kernel per SM, comma-separated")
    ap.add_argument("--out", default="bench-out")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench_persistent_mlp: needs a CUDA GPU")
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    programs = [int(k) * sms for k in args.programs.split(",")]
    bw = copy_bandwidth()
    results = []
    for model in args.models.split(","):
        r = measure(model, args.rounds, programs)
        r["byte_ms_at_copy_bw"] = r["weight_bytes"] / bw * 1000
        results.append(r)
        print(r, flush=True)
    write_json(Path(args.out) / "bench_persistent_mlp.json", {**run_meta("bench_persistent_mlp.py", argv),
                                                              "copy_bandwidth": bw, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
