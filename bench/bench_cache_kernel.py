"""Speed of the VideoRopeCache CUDA kernel (rotate q, write the rotated k and the v into the caches in place) at
Qwen2-VL-2B (12 q / 2 kv heads) and 7B (28 q / 4 kv heads) head shapes, D = 128, B = 1, layout (B, S, H, D).

    python -m bench.bench_cache_kernel --lib build/plugins/libvideorope_kernel.so --out bench_cache_kernel.json

Per model, dtype and step: decode (S = 1, CUDA-graph replay, launch overhead out) and a prefill chunk (S = 4096,
L2 flushed between runs), into caches of 8192 rows at a nonzero offset; VideoRoPE axis map, fractional positions.
Bytes counted: q read + q written + k and v read + the k and v rows written + positions read. The ceiling is a
device-to-device `copy_` of 1 GiB measured in the same run (bytes read + written per second). Every configuration
is first checked against the float64 reference. Without a GPU or a loadable kernel library, a dry run times the
torch op on the CPU at tiny shapes, so the script and its JSON stay exercised; it says why.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench.profiling import chosen, copy_bandwidth, result_path, run_meta, write_json

MODELS = {"qwen2-vl-2b": (12, 2), "qwen2-vl-7b": (28, 4)}  # (q heads, kv heads)
HEAD_DIM = 128
CAPACITY = 8192
DRY = {"models": {"tiny": (4, 2)}, "head_dim": 16, "capacity": 64, "seqs": (1, 32)}


def make_step(device, dtype, q_heads, kv_heads, seq, head_dim=HEAD_DIM, capacity=CAPACITY, seed=0):
    """Inputs of one call: layout 1, write offset so that the chunk ends inside the cache."""
    import torch

    from videorope_trt import rope

    g = torch.Generator(device=device).manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, device=device, dtype=dtype, generator=g)

    offset = capacity // 2 if seq < capacity // 2 else capacity - seq
    return {"q": rand(1, seq, q_heads, head_dim), "k": rand(1, seq, kv_heads, head_dim),
            "v": rand(1, seq, kv_heads, head_dim),
            "positions": torch.rand(3, 1, seq, device=device, generator=g) * 2.0 * (offset + seq),
            "inv_freq": torch.from_numpy(rope.inv_freq(head_dim, 1e6)).to(device),
            "axis_map": torch.from_numpy(rope.axis_map("videorope", head_dim)).to(device),
            "k_cache": rand(1, kv_heads, capacity, head_dim), "v_cache": rand(1, kv_heads, capacity, head_dim),
            "write_offset": torch.tensor([offset], dtype=torch.int32, device=device)}


def bytes_moved(step) -> int:
    """q read + written, k and v read, their rows written (S rows each, all inside the cache), positions read."""
    q, k, v = step["q"], step["k"], step["v"]
    return (2 * q.numel() + 2 * k.numel() + 2 * v.numel()) * q.element_size() + step["positions"].numel() * 4


def rel_error(step, q_rot, k_cache, v_cache) -> float:
    """The largest ‖out − ref‖ / ‖ref‖ of q_rot and the written rows, against the float64 reference."""
    import numpy as np

    from videorope_trt.plugins.reference import VideoRopeCache
    from videorope_trt.rope.contract import RotaryAttrs

    host = {n: t.cpu().double().numpy() if t.is_floating_point() else t.cpu().numpy() for n, t in step.items()}
    host["positions"], host["inv_freq"] = host["positions"].astype(np.float32), host["inv_freq"].astype(np.float32)
    ref = VideoRopeCache(*host.values(), RotaryAttrs(layout=1))
    off, seq = int(host["write_offset"][0]), host["q"].shape[1]
    pairs = [(q_rot, ref[0]), (k_cache[:, :, off:off + seq], ref[1][:, :, off:off + seq]),
             (v_cache[:, :, off:off + seq], ref[2][:, :, off:off + seq])]
    return max(float(np.linalg.norm(o.cpu().double().numpy() - r) / np.linalg.norm(r)) for o, r in pairs)


def timer(seq):
    """Median milliseconds: CUDA-graph replay for decode, L2-flushed events otherwise (triton.testing)."""
    from triton.testing import do_bench, do_bench_cudagraph

    if seq == 1:
        return lambda fn: do_bench_cudagraph(fn, rep=50, return_mode="median")
    return lambda fn: do_bench(fn, warmup=25, rep=200, return_mode="median")


def bench_gpu(lib, model, dtype, seq, copy_bps) -> dict:
    import torch

    from videorope_trt.plugins.cuda import rotate_into_cache
    from videorope_trt.rope.contract import RotaryAttrs

    q_heads, kv_heads = MODELS[model]
    step = make_step("cuda", dtype, q_heads, kv_heads, seq)
    attrs, out = RotaryAttrs(layout=1), torch.empty_like(step["q"])
    run = lambda: rotate_into_cache(*step.values(), attrs, out_q=out, lib=lib)
    check = {n: t.clone() for n, t in step.items()}
    rotate_into_cache(*check.values(), attrs, out_q=out, lib=lib)
    err = rel_error(step, out, check["k_cache"], check["v_cache"])
    ms = timer(seq)(run)
    moved = bytes_moved(step)
    return {"model": model, "dtype": str(dtype).split(".")[-1], "seq": seq, "kernel_us": ms * 1e3,
            "bytes": moved, "kernel_GBps": moved / (ms * 1e-3) / 1e9, "copy_GBps": copy_bps / 1e9,
            "frac_of_copy": moved / (ms * 1e-3) / copy_bps, "rel_err_vs_fp64": err}


def bench_dry(dtype) -> list:
    """The torch op on the CPU at tiny shapes: exercises the script, times nothing that matters."""
    from videorope_trt.plugins.torch_op import apply_cache
    from videorope_trt.rope.contract import RotaryAttrs

    rows = []
    for model, (q_heads, kv_heads) in DRY["models"].items():
        for seq in DRY["seqs"]:
            step = make_step("cpu", dtype, q_heads, kv_heads, seq, DRY["head_dim"], DRY["capacity"])
            apply_cache(*step.values(), RotaryAttrs(layout=1))  # the first call pays for torch's setup
            start = time.perf_counter()
            q_rot, k_cache, v_cache = apply_cache(*step.values(), RotaryAttrs(layout=1))
            us = (time.perf_counter() - start) * 1e6
            rows.append({"model": model, "dtype": str(dtype).split(".")[-1], "seq": seq, "torch_op_cpu_us": us,
                         "bytes": bytes_moved(step), "rel_err_vs_fp64": rel_error(step, q_rot, k_cache, v_cache)})
    return rows


def kernel_or_reason(path):
    """(the loaded kernel library, None) or (None, why the GPU run cannot happen)."""
    import torch

    if not torch.cuda.is_available():
        return None, "no CUDA GPU"
    from videorope_trt.plugins.cuda import load

    try:
        lib = load(path)
    except (OSError, RuntimeError) as e:  # FileNotFoundError is an OSError
        return None, f"the kernel library does not load: {e}"
    if not hasattr(lib, "videorope_cache_launch"):
        return None, "the kernel library has no videorope_cache_launch (rebuild it from this checkout)"
    return lib, None


def print_table(rows) -> None:
    if rows and "kernel_us" in rows[0]:
        print(f"{'model':<12} {'dtype':>8} {'S':>5} {'us':>9} {'GB/s':>8} {'copy GB/s':>10} {'of copy':>8} {'err':>8}")
        for r in rows:
            print(f"{r['model']:<12} {r['dtype']:>8} {r['seq']:>5} {r['kernel_us']:9.2f} {r['kernel_GBps']:8.0f} "
                  f"{r['copy_GBps']:10.0f} {r['frac_of_copy']:8.1%} {r['rel_err_vs_fp64']:8.1e}")
        return
    print(f"{'model':<12} {'dtype':>8} {'S':>5} {'torch op on CPU us':>18} {'err':>8}")
    for r in rows:
        print(f"{r['model']:<12} {r['dtype']:>8} {r['seq']:>5} {r['torch_op_cpu_us']:18.1f} "
              f"{r['rel_err_vs_fp64']:8.1e}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lib", default=None, help="libvideorope_kernel.so or the plugin library (default: "
                    "$VIDEOROPE_KERNEL_LIB)")
    ap.add_argument("--out", type=Path, default=Path("bench_cache_kernel.json"),
                    help="a .json file, or a folder for bench_cache_kernel.json")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--dtypes", default="float16,bfloat16")
    ap.add_argument("--prefill", type=int, default=4096, help="prefill chunk length")
    ap.add_argument("--dry", action="store_true", help="the CPU dry run even where a GPU and the kernel exist")
    args = ap.parse_args(argv)
    import torch

    models = chosen(args.models, MODELS, "--models")
    dtypes = [getattr(torch, d) for d in chosen(args.dtypes, {"float16": 1, "bfloat16": 1, "float32": 1}, "--dtypes")]
    lib, reason = (None, "--dry given") if args.dry else kernel_or_reason(args.lib)
    if lib is None:
        print(f"VideoRopeCache kernel not timed ({reason}): dry run of the torch op on the CPU at tiny shapes")
        rows, device, extra = [r for d in dtypes for r in bench_dry(d)], "cpu", {"mode": "dry", "reason": reason}
    else:
        copy_bps = copy_bandwidth("cuda")
        rows = [bench_gpu(lib, m, d, s, copy_bps) for m in models for d in dtypes for s in (1, args.prefill)]
        device, extra = "cuda", {"mode": "gpu", "copy_bytes_per_s": copy_bps}
    print_table(rows)
    path = result_path(args.out, "bench_cache_kernel")
    write_json(path, {**run_meta("bench_cache_kernel.py", argv, device), **extra, "rows": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
