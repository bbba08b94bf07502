"""One-token matrix products at the decoder's shapes: cuBLAS (`F.linear`) vs our Triton GEMV, same weights.

For each matrix of the Qwen2-VL-2B / -7B decoder layer and lm_head (fused q/k/v, o, fused gate/up, down): median
device time (`triton.testing.do_bench`, L2 flushed between runs, as a decode step reads weights no cache holds),
bytes moved (weight + x + y) per second, its fraction of the device-to-device copy bandwidth measured in the same
run, and the output's relative error against an fp32 product (both should be the dtype's rounding only).

Then the fused decode step's products alone, as one CUDA graph over all layers (`--chain`): per layer
GEMV(rms(x)) for q/k/v, x + GEMV for o, SwiGLU(GEMV(rms(x))) for gate/up, x + GEMV for down, with and without
programmatic dependent launch, against the same chain unfused (norm, cuBLAS product, SwiGLU, add as torch ops),
as time per layer and fraction of the copy bandwidth for the weights read.

    python -m bench.bench_gemv --out bench-out        # on a CUDA GPU with Triton
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.profiling import copy_bandwidth, run_meta, write_json

#: name → (N, K, bias) per model: the decoder's matrices (q/k/v and gate/up fused as the runtime fuses them)
SHAPES = {
    "2b": {"qkv": (1536 + 2 * 256, 1536, True), "o": (1536, 1536, False), "gate_up": (2 * 8960, 1536, False),
           "down": (1536, 8960, False), "lm_head": (151936, 1536, False)},
    "7b": {"qkv": (3584 + 2 * 512, 3584, True), "o": (3584, 3584, False), "gate_up": (2 * 18944, 3584, False),
           "down": (3584, 18944, False), "lm_head": (152064, 3584, False)},
}


def bench_shape(n: int, k: int, bias: bool, dtype, bandwidth: float) -> dict:
    from triton.testing import do_bench

    from videorope_trt.runtime.kernels.gemv import gemv

    g = torch.Generator(device="cuda").manual_seed(0)
    w = (torch.randn(n, k, device="cuda", generator=g) * 0.02).to(dtype)
    b = torch.randn(n, device="cuda", generator=g).to(dtype) if bias else None
    x = torch.randn(1, k, device="cuda", generator=g).to(dtype)
    ref = F.linear(x.double(), w.double(), None if b is None else b.double())
    nbytes = (n * k + k + n + (n if bias else 0)) * w.element_size()
    out = {"N": n, "K": k, "MB": nbytes / 1e6}
    for name, fn in {"cublas": lambda: F.linear(x, w, b), "triton": lambda: gemv(x, w, b)}.items():
        y = fn()  # the first call autotunes
        ms = do_bench(fn)
        err = float((y.double() - ref).norm() / ref.norm())
        out[name] = {"us": 1000 * ms, "TBps": nbytes / (ms / 1000) / 1e12, "of_copy": nbytes / (ms / 1000) / bandwidth,
                     "rel_err": err}
    from videorope_trt.runtime.kernels.gemv import _kernel

    out["triton"]["config"] = str(getattr(_kernel(), "best_config", None))
    out["speedup"] = out["cublas"]["us"] / out["triton"]["us"]
    return out


def _graph_ms(fn, replays: int = 20) -> float:
    """Median replay time (ms) of `fn` captured in a CUDA graph (warmed up, autotuned, outside the capture)."""
    import statistics

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    times = []
    for _ in range(replays):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        graph.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def bench_chain(model: str, layers: int, dtype, bandwidth: float) -> dict:
    """The decode step's four products per layer over `layers` layers of distinct weights, in one CUDA graph."""
    from videorope_trt.models.decoder import rms_norm
    from videorope_trt.runtime.kernels.gemv import gemv, pdl_supported

    shapes = SHAPES[model]
    hidden, inter = shapes["o"][0], shapes["down"][1]
    g = torch.Generator(device="cuda").manual_seed(0)
    rand = lambda *shape: (torch.randn(*shape, device="cuda", generator=g) * 0.02).to(dtype)
    weights = [{name: rand(*shapes[name][:2]) for name in ("qkv", "o", "gate_up", "down")} for _ in range(layers)]
    gamma, bias = rand(hidden) + 1, rand(shapes["qkv"][0])
    x0 = torch.randn(1, 1, hidden, device="cuda", generator=g).to(dtype)
    nbytes = sum(w.numel() * w.element_size() for layer in weights for w in layer.values())

    def fused(pdl):
        def run():
            x = x0
            for w in weights:
                qkv = gemv(x, w["qkv"], bias, norm=gamma, eps=1e-6, pdl=pdl)
                x = gemv(qkv[..., :hidden], w["o"], residual=x, pdl=pdl)  # the attention's output stands in
                h = gemv(x, w["gate_up"], norm=gamma, eps=1e-6, swiglu=True, pdl=pdl)
                x = gemv(h, w["down"], residual=x, pdl=pdl)
            return x
        return run

    def unfused():
        x = x0
        for w in weights:
            qkv = F.linear(rms_norm(x, gamma, 1e-6), w["qkv"], bias)
            x = x + F.linear(qkv[..., :hidden], w["o"])
            gate, up = F.linear(rms_norm(x, gamma, 1e-6), w["gate_up"]).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, w["down"])
        return x

    rows = {"unfused (torch ops, cuBLAS)": unfused, "fused": fused(False)}
    if pdl_supported():
        rows["fused + PDL"] = fused(True)
    out = {"layers": layers, "weight_GB": nbytes / 1e9, "hidden": hidden, "intermediate": inter}
    for name, fn in rows.items():
        ms = _graph_ms(fn)
        out[name] = {"us_per_layer": 1000 * ms / layers, "of_copy": nbytes / (ms / 1000) / bandwidth}
    return out


#: (rows per program, tile width, warps) tried by --configs beyond gemv.CONFIGS
EXTRA_CONFIGS = [(1, 512, 4), (1, 256, 2), (2, 512, 8), (2, 2048, 8), (4, 1024, 8), (8, 512, 8), (16, 256, 8)]


def bench_configs(model: str, dtype, bandwidth: float) -> dict:
    """Every config of the product kernel, forced one at a time, on the decode step's three `gemv` products of
    `model` with their epilogues (o + residual, gate/up with norm and SwiGLU, down + residual): µs (do_bench, L2
    flushed) and fraction of the copy bandwidth; and the config the autotuner picks."""
    from triton.testing import do_bench

    from videorope_trt.runtime.kernels import gemv

    shapes = SHAPES[model]
    hidden = shapes["o"][0]
    g = torch.Generator(device="cuda").manual_seed(0)
    rand = lambda *shape: (torch.randn(*shape, device="cuda", generator=g) * 0.02).to(dtype)
    cases = {"o": dict(n=hidden, k=hidden, residual=True), "gate_up": dict(n=shapes["gate_up"][0], k=hidden,
             norm=True, swiglu=True), "down": dict(n=hidden, k=shapes["down"][1], residual=True)}
    kernel = gemv._kernel()
    out = {}
    for name, c in cases.items():
        n, k = c["n"], c["k"]
        w, x, gamma = rand(n, k), rand(1, k), rand(k) + 1
        m = n // 2 if c.get("swiglu") else n
        y, r = torch.empty(1, m, device="cuda", dtype=dtype), rand(1, m)
        nbytes = n * k * w.element_size()
        flags = dict(HAS_BIAS=False, NORM=bool(c.get("norm")), SWIGLU=bool(c.get("swiglu")),
                     RESIDUAL=bool(c.get("residual")), PDL=False)
        args = (x, w, w, gamma, r, y, m, k, 1e-6)
        row = out[name] = {"N": n, "K": k, "MB": nbytes / 1e6, "configs": {}}
        for bn, bk, warps in gemv.CONFIGS + EXTRA_CONFIGS:
            grid = ((m + bn - 1) // bn,)

            def run(grid=grid, args=args, flags=flags, bn=bn, bk=bk, warps=warps):
                return kernel.fn[grid](*args, **flags, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, num_stages=1)

            ms = do_bench(run, return_mode="median")
            row["configs"][f"{bn}x{bk}/{warps}w"] = {"us": 1000 * ms, "of_copy": nbytes / (ms / 1000) / bandwidth}
        gemv.gemv(x, w, norm=gamma if c.get("norm") else None, eps=1e-6, swiglu=bool(c.get("swiglu")),
                  residual=r if c.get("residual") else None)
        row["autotuned"] = str(getattr(kernel, "best_config", None))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="2b,7b")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--chain-layers", type=int, default=28, help="layers in the --chain graph (0: skip it)")
    ap.add_argument("--configs", action="store_true", help="time every product-kernel config at each decode shape")
    ap.add_argument("--out", default="bench-out")
    args = ap.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    bandwidth = copy_bandwidth()
    meta = {**run_meta("bench_gemv.py", argv), "dtype": args.dtype, "copy_bandwidth_Bps": bandwidth}
    results = {}
    print(f"copy bandwidth {bandwidth / 1e12:.2f} TB/s")
    print("| model | matrix | MB | cuBLAS µs (% copy) | Triton µs (% copy) | x |")
    for model in args.models.split(","):
        for name, (n, k, bias) in SHAPES[model].items():
            r = results.setdefault(model, {})[name] = bench_shape(n, k, bias, dtype, bandwidth)
            c, t = r["cublas"], r["triton"]
            print(f"| {model} | {name} | {r['MB']:.1f} | {c['us']:.1f} ({100 * c['of_copy']:.0f}%) | "
                  f"{t['us']:.1f} ({100 * t['of_copy']:.0f}%) | {r['speedup']:.2f} |", flush=True)
    chains = {}
    if args.chain_layers:
        print("| model | chain | µs per layer | % copy |")
        for model in args.models.split(","):
            c = chains[model] = bench_chain(model, args.chain_layers, dtype, bandwidth)
            for name, r in c.items():
                if isinstance(r, dict):
                    print(f"| {model} | {name} | {r['us_per_layer']:.1f} | {100 * r['of_copy']:.0f}% |", flush=True)
    configs = {}
    if args.configs:
        for model in args.models.split(","):
            configs[model] = bench_configs(model, dtype, bandwidth)
            for name, row in configs[model].items():
                best = min(row["configs"].items(), key=lambda kv: kv[1]["us"])
                print(f"{model} {name} ({row['MB']:.1f} MB): autotuned {row['autotuned']}; best {best[0]} "
                      f"{best[1]['us']:.1f} µs ({100 * best[1]['of_copy']:.0f}%); all: "
                      + ", ".join(f"{c} {v['us']:.1f}" for c, v in row["configs"].items()), flush=True)
    write_json(Path(args.out) / "bench_gemv.json", {**meta, "results": results, "chains": chains, "configs": configs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
