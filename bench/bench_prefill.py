"""Where chunked prefill spends its time: attention forms at the decoder's head shapes, and one whole prefill.

1. Attention: a 32k-token causal prefill's attention at Qwen2-VL-2B / -7B head counts (grouped-query), computed
   chunk by chunk as the runtime does (each chunk's queries against every key so far, causal aligned to the last
   key), in several forms; median of 3 after a warm-up, CUDA events, TFLOP/s over the causal pairs.
2. Prefill: the static-cache decoder (`StaticCacheDecoder`, random weights) over 32k random embeddings at a few
   chunk sizes, timed, then profiled once and its kernel time split into matrix products, attention and the rest.

    python -m bench.bench_prefill --model 2b --out bench-out        # on a CUDA GPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.bench_runtime import build_models, model_config
from bench.profiling import device_ms, kernels, run_meta, write_json


def _time(fn, repeats: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1000)
    return statistics.median(times)


def _lower_right(q, k, v, enable_gqa: bool = True):
    from torch.nn.attention.bias import causal_lower_right

    if q.shape[2] == k.shape[2]:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=enable_gqa)
    mask = causal_lower_right(q.shape[2], k.shape[2])
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=enable_gqa)


def _with_backend(backend_name: str, repeat: bool):
    """One SDPA backend forced; `repeat`: K/V heads repeated to the query heads first (no grouped-query form)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def attend(q, k, v):
        if repeat:
            g = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
        with sdpa_kernel(getattr(SDPBackend, backend_name)):
            return _lower_right(q, k, v, enable_gqa=not repeat)
    return attend


def _flash_op(q, k, v):
    """aten's flash kernel directly: causal with fewer queries than keys aligns to the last key."""
    return torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, True)[0]


def _split(q, k, v):
    """The runtime's split form: earlier rows and the chunk itself as two cuDNN attentions, merged."""
    from videorope_trt.runtime.kernels.prefill_attention import split_causal_attention

    return split_causal_attention(q, k, v, q.shape[-1] ** -0.5)


FORMS = {
    "split_cudnn": _split,
    "sdpa_gqa": _lower_right,  # what the runtime calls today
    "flash_gqa": _with_backend("FLASH_ATTENTION", repeat=False),
    "efficient_repeat": _with_backend("EFFICIENT_ATTENTION", repeat=True),
    "cudnn_repeat": _with_backend("CUDNN_ATTENTION", repeat=True),
    "flash_op_gqa": _flash_op,
}


def bench_attention(cfg: dict, length: int, chunks: list, dtype) -> list:
    hq, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    d = cfg["hidden_size"] // hq
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(1, hq, length, d, device="cuda", dtype=dtype, generator=g)
    k = torch.randn(1, kv, length, d, device="cuda", dtype=dtype, generator=g)
    v = torch.randn(1, kv, length, d, device="cuda", dtype=dtype, generator=g)
    flops = 4 * d * hq * length * (length + 1) / 2
    rows = []
    for chunk in chunks:
        ref = None
        for name, attend in FORMS.items():
            def run(attend=attend, chunk=chunk):
                return [attend(q[:, :, s0:s0 + chunk], k[:, :, :s0 + chunk], v[:, :, :s0 + chunk])
                        for s0 in range(0, length, chunk)]
            row = {"chunk": chunk, "form": name}
            try:
                out = torch.cat(run(), dim=2)
                ref = out if ref is None else ref
                rel_err = float((out.float() - ref.float()).norm() / ref.float().norm())
                row.update(s=_time(run), rel_err_vs_first=rel_err)
                row["TFLOPs"] = flops / row["s"] / 1e12
            except Exception as e:  # a form this torch does not take at this shape: recorded, the rest goes on
                row["error"] = f"{type(e).__name__}: {e}"[:200]
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def _category(name: str) -> str:
    n = name.lower()
    if any(s in n for s in ("flash", "fmha", "attention", "sdpa")):
        return "attention"
    if any(s in n for s in ("nvjet", "gemm", "cutlass", "xmma", "gemv")):
        return "matrix products"
    return "other"


def bench_prefill(ours, cfg: dict, length: int, chunks: list, dtype) -> list:
    from torch.profiler import ProfilerActivity, profile

    from videorope_trt.runtime.backends.torch.static_decoder import StaticCacheDecoder

    g = torch.Generator(device="cuda").manual_seed(1)
    embeds = torch.randn(1, length, cfg["hidden_size"], device="cuda", dtype=dtype, generator=g) * 0.02
    positions = torch.arange(length, device="cuda", dtype=torch.float32).expand(3, 1, length).contiguous()
    mask = torch.ones(1, length, dtype=torch.int64, device="cuda")
    dec = StaticCacheDecoder(ours, 1, length, split_prefill=True)
    rows = []
    for chunk in chunks:
        def run(chunk=chunk):
            with torch.no_grad():
                for s0 in range(0, length, chunk):
                    s1 = min(length, s0 + chunk)
                    dec.forward(embeds[:, s0:s1], positions[:, :, s0:s1], mask[:, :s1],
                                torch.arange(s0, s1, device="cuda"), s1)
        row = {"chunk": chunk, "s": _time(run), "tokens_per_s": None}
        row["tokens_per_s"] = length / row["s"]
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            run()
            torch.cuda.synchronize()
        split, rows_ = {}, kernels(prof)
        for e in rows_:
            split[_category(e.key)] = split.get(_category(e.key), 0) + device_ms(e)
        row["kernel_ms"] = split
        row["top"] = [{"ms": device_ms(e), "count": e.count, "name": e.key[:90]} for e in rows_[:12]]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="2b")
    ap.add_argument("--length", type=int, default=32768)
    ap.add_argument("--chunks", default="4096,32768")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--out", default="bench-out")
    args = ap.parse_args(argv)
    dtype, chunks = getattr(torch, args.dtype), [int(c) for c in args.chunks.split(",")]
    cfg = model_config(args.model)
    result = {**run_meta("bench_prefill.py", argv), "model": args.model, "length": args.length}
    result["attention"] = bench_attention(cfg, args.length, chunks, dtype)
    _, ours = build_models(cfg, "cuda", dtype)
    result["prefill"] = bench_prefill(ours, cfg, args.length, chunks, dtype)
    write_json(Path(args.out) / f"bench_prefill_{args.model}.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
