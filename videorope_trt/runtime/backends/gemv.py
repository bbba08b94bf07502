"""One-token matrix products for the decode step, in Triton: y (1, N) = x (1, K) · Wᵀ + b, W (N, K) row-major.

A decode step is little more than reading every weight once, so its speed is the speed of these reads. cuBLAS's
kernels for one row move 38-95 % of the measured copy bandwidth on an H200 at the decoder's shapes (the small
matrices worst; docs/benchmarks.md). This kernel gives each program a few weight rows, walks K in wide contiguous
tiles, keeps a fp32 partial sum per lane and reduces once at the end; autotuning picks the rows per program and
the tile width per shape. It is faster than cuBLAS at most of those shapes, not all, so `OneRowLinear` times both
once per shape and keeps the faster.

Used only on CUDA for fp16/bf16 with a single row of x (`usable`); everything else goes to `F.linear`. Triton is
imported only here, and only when the module is first used.
"""

from __future__ import annotations

import functools
import importlib.util

import torch
import torch.nn.functional as F


def available() -> bool:
    return importlib.util.find_spec("triton") is not None and torch.cuda.is_available()


def usable(x, weight) -> bool:
    """True when `gemv` takes this product: one row, fp16/bf16, on CUDA, contiguous weight."""
    return (x.is_cuda and x.dtype in (torch.float16, torch.bfloat16) and x.numel() == weight.shape[1]
            and weight.dtype == x.dtype and weight.is_contiguous())


@functools.cache
def _kernel():
    import triton
    import triton.language as tl

    # the shapes measured on an H200 all chose one or two rows per program and 1024-wide tiles; a few neighbours
    # stay for other GPUs and shapes (every config is compiled and timed once per shape: keep the list short)
    configs = [triton.Config({"BLOCK_N": n, "BLOCK_K": k}, num_warps=w, num_stages=1)
               for n, k, w in [(1, 1024, 4), (2, 1024, 4), (2, 512, 4), (4, 512, 4), (1, 2048, 8), (4, 256, 4)]]

    @triton.autotune(configs=configs, key=["N", "K"])
    @triton.jit
    def gemv_kernel(x_ptr, w_ptr, b_ptr, y_ptr, N, K, HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_K: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        row_ok = rows < N
        acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            k_ok = ks < K
            x = tl.load(x_ptr + ks, mask=k_ok, other=0.0).to(tl.float32)
            w = tl.load(w_ptr + rows[:, None].to(tl.int64) * K + ks[None, :], mask=row_ok[:, None] & k_ok[None, :],
                        other=0.0, eviction_policy="evict_first")
            acc += w.to(tl.float32) * x[None, :]
        y = tl.sum(acc, axis=1)
        if HAS_BIAS:
            y += tl.load(b_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
        tl.store(y_ptr + rows, y.to(y_ptr.dtype.element_ty), mask=row_ok)

    return gemv_kernel


def gemv(x, weight, bias=None):
    """x (..., K) holding one row, weight (N, K), bias (N,) or None → (..., N) in x's dtype."""
    if not usable(x, weight):
        raise ValueError(f"gemv: expected one fp16/bf16 CUDA row of length {weight.shape[1]} and a contiguous weight "
                         f"of its dtype; got x {tuple(x.shape)} {x.dtype} on {x.device}, weight {tuple(weight.shape)} "
                         f"{weight.dtype}")
    n, k = weight.shape
    y = torch.empty(x.shape[:-1] + (n,), dtype=x.dtype, device=x.device)
    kernel = _kernel()
    grid = lambda meta: ((n + meta["BLOCK_N"] - 1) // meta["BLOCK_N"],)  # noqa: E731
    kernel[grid](x.contiguous(), weight, bias if bias is not None else weight, y, n, k, HAS_BIAS=bias is not None)
    return y


def _triton_is_faster(x, weight, bias) -> bool:
    from triton.testing import do_bench  # flushes L2 between runs: a decode step's weights are never cached

    time = lambda fn: do_bench(fn, return_mode="median")  # noqa: E731
    return time(lambda: gemv(x, weight, bias)) < time(lambda: F.linear(x, weight, bias))


class OneRowLinear:
    """`F.linear` whose one-row products (`usable`) go to the faster of `gemv` and cuBLAS for their shape, timed
    at the first product of each shape. A shape first seen inside a CUDA graph capture (nothing can be timed
    there) uses cuBLAS and is timed at its next eager call. `choice` maps (N, K, dtype, bias) → "triton"/"cublas"."""

    def __init__(self):
        self.choice = {}

    def __call__(self, x, weight, bias=None):
        if not usable(x, weight):
            return F.linear(x, weight, bias)
        key = (*weight.shape, str(weight.dtype), bias is not None)
        pick = self.choice.get(key)
        if pick is None:
            if torch.cuda.is_current_stream_capturing():
                return F.linear(x, weight, bias)
            pick = self.choice[key] = "triton" if _triton_is_faster(x, weight, bias) else "cublas"
        return gemv(x, weight, bias) if pick == "triton" else F.linear(x, weight, bias)
