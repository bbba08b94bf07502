"""Speed of the VideoRope CUDA kernel against PyTorch paths, on Qwen2-VL-7B heads (28 q, 4 kv, D = 128).

    python -m bench.bench_rope_kernel --lib build/libvideorope_kernel.so --out bench_rope.json

Per dtype (fp16, bf16) and S (1, 4k, 32k, 128k), B = 1, layout (B, S, H, D), VideoRoPE LTA axis map, fractional
positions; median device times (triton.testing.do_bench with L2 flushed between runs; CUDA-graph replay for S = 1):
- kernel:    one launch rotating q and k (videorope_trt.plugins.cuda), out of place
- eager:     PyTorch eager: gather angles, cos/sin once, rotate-half of q and k (what transformers does)
- compiled:  torch.compile of the same function
- tables:    the `native`/`decomposed` export forms' cost: cos/sin tables (B, S, D) materialized by a compiled
             function, then a compiled rotation that reads them (both timed, summed)
- copy:      q and k copied device-to-device: the bandwidth ceiling measured in the same run
Bytes counted for the kernel: q + k read and written, positions read. Results go to --out (JSON) and a table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

Q_HEADS, KV_HEADS, HEAD_DIM = 28, 4, 128


def rotate_half(x):
    import torch

    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def eager_rope(q, k, positions, inv_freq, axis_map):
    """transformers-style: angles (B, S, F) in fp32, cos/sin cat'ed to D in x's dtype, rotate-half of q and k."""
    import torch

    ang = positions[axis_map.long()].permute(1, 2, 0) * inv_freq  # (B, S, F)
    emb = torch.cat((ang, ang), dim=-1)
    cos, sin = emb.cos().to(q.dtype)[:, :, None], emb.sin().to(q.dtype)[:, :, None]  # (B, S, 1, D)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def make_tables(positions, inv_freq, axis_map, dtype):
    import torch

    ang = positions[axis_map.long()].permute(1, 2, 0) * inv_freq
    emb = torch.cat((ang, ang), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)  # (B, S, D) each: what the native/decomposed forms materialize


def rotate_with_tables(q, k, cos, sin):
    cos, sin = cos[:, :, None], sin[:, :, None]
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def inputs(seq, dtype, seed=0):
    import torch

    from videorope_trt import rope

    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(1, seq, Q_HEADS, HEAD_DIM, device="cuda", dtype=dtype, generator=g)
    k = torch.randn(1, seq, KV_HEADS, HEAD_DIM, device="cuda", dtype=dtype, generator=g)
    pos = torch.rand(3, 1, seq, device="cuda", generator=g) * 2.0 * seq  # fractional, up to 2S (δ = 2)
    inv = torch.from_numpy(rope.inv_freq(HEAD_DIM, 1e6)).cuda()
    amap = torch.from_numpy(rope.axis_map("videorope", HEAD_DIM)).cuda()
    return q, k, pos, inv, amap


def timer(seq):
    """Median milliseconds of fn: CUDA-graph replay for decode (launch overhead out), events otherwise."""
    from triton.testing import do_bench, do_bench_cudagraph

    if seq == 1:
        return lambda fn: do_bench_cudagraph(fn, rep=50, return_mode="median")
    return lambda fn: do_bench(fn, warmup=25, rep=200, return_mode="median")


def check(lib, q, k, pos, inv, amap):
    """The kernel against the contract in float64 (the angle is the fp32 product, then everything in float64):
    the larger ‖y − ref‖ / ‖ref‖ of q and k."""
    import torch

    from videorope_trt.plugins.cuda import rotate
    from videorope_trt.rope.contract import RotaryAttrs

    yq, yk = rotate(q, pos, inv, amap, RotaryAttrs(layout=1), k=k, lib=lib)
    ang = (pos[amap.long()].permute(1, 2, 0) * inv).double()  # (B, S, F): fp32 product, as the contract says
    rq, rk = rotate_with_tables(q.double(), k.double(), *(torch.cat((t, t), dim=-1) for t in (ang.cos(), ang.sin())))
    return max(float((y.double() - r).norm() / r.norm()) for y, r in ((yq, rq), (yk, rk)))


def bench_one(lib, seq, dtype, compiled):
    import torch

    from videorope_trt.plugins.cuda import rotate
    from videorope_trt.rope.contract import RotaryAttrs

    q, k, pos, inv, amap = inputs(seq, dtype)
    err = check(lib, q, k, pos, inv, amap)
    oq, ok_ = torch.empty_like(q), torch.empty_like(k)
    attrs = RotaryAttrs(layout=1)
    bench = timer(seq)

    def t(fn):
        try:
            return bench(fn)
        except Exception as e:  # one failing path must not hide the others' numbers
            print(f"  timing failed: {type(e).__name__}: {e}", flush=True)
            return float("nan")

    res = {"seq": seq, "dtype": str(dtype).split(".")[-1], "rel_err_vs_fp64": err}
    res["kernel_ms"] = t(lambda: rotate(q, pos, inv, amap, attrs, k=k, out_q=oq, out_k=ok_, lib=lib))
    res["eager_ms"] = t(lambda: eager_rope(q, k, pos, inv, amap))
    res["compiled_ms"] = t(lambda: compiled["rope"](q, k, pos, inv, amap))
    cos, sin = compiled["tables"](pos, inv, amap, dtype)
    res["tables_build_ms"] = t(lambda: compiled["tables"](pos, inv, amap, dtype))
    res["tables_rotate_ms"] = t(lambda: compiled["rotate"](q, k, cos, sin))
    src = torch.cat((q.flatten(), k.flatten()))
    dst = torch.empty_like(src)
    res["copy_ms"] = t(lambda: dst.copy_(src))
    qk_bytes = (q.numel() + k.numel()) * q.element_size()
    res["kernel_bytes"] = 2 * qk_bytes + pos.numel() * 4
    res["kernel_TBps"] = res["kernel_bytes"] / (res["kernel_ms"] * 1e-3) / 1e12
    res["copy_TBps"] = 2 * qk_bytes / (res["copy_ms"] * 1e-3) / 1e12
    res["frac_of_copy"] = res["kernel_TBps"] / res["copy_TBps"]
    res["speedup_eager"] = res["eager_ms"] / res["kernel_ms"]
    res["speedup_compiled"] = res["compiled_ms"] / res["kernel_ms"]
    res["speedup_tables"] = (res["tables_build_ms"] + res["tables_rotate_ms"]) / res["kernel_ms"]
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lib", required=True, help="libvideorope_kernel.so or the plugin library")
    ap.add_argument("--out", type=Path, required=True, help="a .json file, or a folder for bench_rope_kernel.json")
    ap.add_argument("--seqs", default="1,4096,32768,131072")
    ap.add_argument("--dtypes", default="float16,bfloat16")
    args = ap.parse_args(argv)
    import torch

    from bench.profiling import result_path
    from videorope_trt.artifact.atomic import write_atomic
    from videorope_trt.plugins.cuda import load

    lib = load(args.lib)
    compiled = {"rope": torch.compile(eager_rope), "tables": torch.compile(make_tables),
                "rotate": torch.compile(rotate_with_tables)}
    rows = []
    for dtype in (getattr(torch, d) for d in args.dtypes.split(",")):
        for seq in (int(s) for s in args.seqs.split(",")):
            rows.append(bench_one(lib, seq, dtype, compiled))
            r = rows[-1]
            print(f"{r['dtype']:>8} S={seq:>6}: kernel {r['kernel_ms'] * 1e3:9.1f} us ({r['kernel_TBps']:.2f} TB/s, "
                  f"{r['frac_of_copy']:.0%} of copy {r['copy_TBps']:.2f}) eager x{r['speedup_eager']:.1f} "
                  f"compiled x{r['speedup_compiled']:.2f} tables x{r['speedup_tables']:.2f} "
                  f"err {r['rel_err_vs_fp64']:.1e}",
                  flush=True)
    meta = {"date": datetime.date.today().isoformat(), "device": torch.cuda.get_device_name(),
            "torch": torch.__version__, "command": " ".join(sys.argv)}
    path = result_path(args.out, "bench_rope_kernel")
    write_atomic(path, json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
