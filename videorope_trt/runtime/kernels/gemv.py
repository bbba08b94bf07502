"""One-token matrix products for the decode step, in Triton: y (1, N) = x (1, K) · Wᵀ + b, W (N, K) row-major.

A decode step is little more than reading every weight once, so its speed is the speed of these reads. cuBLAS's
one-row kernels leave much of the copy bandwidth unused at the decoder's smaller matrices (measured by
bench/bench_gemv.py; docs/benchmark-log.md, "Where the time goes", its "One-row products" table). This kernel gives
each program a few weight rows, walks K in wide contiguous tiles, keeps a fp32 partial sum per lane and reduces once
at the end; autotuning picks the rows per program and the tile width per shape. It is faster than cuBLAS at most of
those shapes, not all, so `OneRowLinear` times both once per shape and keeps the faster. The same kernel takes the
layer's element-wise neighbours (the RMS norm before a product, SwiGLU and the residual add after it) and a
programmatic dependent launch, which is what the fused decode step (`static_decoder.StaticCacheDecoder`, its
`decode_ops`) runs: fewer kernels, and each one's weight reads started before the previous kernel has finished.

Used only on CUDA for fp16/bf16 with a single row of x (`usable`): `OneRowLinear` sends everything else to
`F.linear`, and the fused step is only chosen where it applies. Triton is imported only here, and only when the
module is first used.
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


def pdl_supported(device=None) -> bool:
    """Programmatic dependent launch (`pdl=True`) on `device`: Hopper or newer, and a Triton that has it."""
    if not available():
        return False
    return _pdl_on(torch.cuda.current_device() if device is None or torch.device(device).index is None
                   else torch.device(device).index)


@functools.cache
def _pdl_on(index: int) -> bool:
    import triton.language as tl

    return torch.cuda.get_device_capability(index)[0] >= 9 and hasattr(tl.extra.cuda, "gdc_wait")


#: (rows per program, tile width, warps) the autotuner tries: chosen by bench/bench_gemv.py --configs (one or two
#: rows per program and 1024-wide tiles won at the decoder's shapes); a few neighbours stay for other GPUs and shapes
#: (every config is compiled and timed once per shape: keep the list short)
CONFIGS = [(1, 1024, 4), (2, 1024, 4), (2, 512, 4), (4, 512, 4), (1, 2048, 8), (4, 256, 4), (8, 256, 4)]


def launch(pdl: bool) -> dict:
    """The Triton launch option for a programmatic dependent launch (only passed when wanted: older Tritons lack it)."""
    return {"launch_pdl": True} if pdl else {}


@functools.cache
def _row_sums():
    """The products' shared main loop, a Triton function: `row_sums(...)` → (Σ w·h, Σ u·h) over K for a tile of
    BLOCK_N weight rows (and, with PAIRED, a second tile `u_rows`), h = x or, with NORM, rms_norm(x) * g; fp32."""
    import triton
    import triton.language as tl

    @triton.jit
    def row_sums(x_ptr, g_ptr, w_rows, u_rows, row_ok, K, eps, NORM: tl.constexpr, PAIRED: tl.constexpr,
                 PDL: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        ks = tl.arange(0, BLOCK_K)
        # the first weight tiles depend on no earlier kernel: with PDL they are read while that kernel finishes
        w = tl.load(w_rows + ks[None, :], mask=row_ok & (ks[None, :] < K), other=0.0, eviction_policy="evict_first")
        u = w
        if PAIRED:
            u = tl.load(u_rows + ks[None, :], mask=row_ok & (ks[None, :] < K), other=0.0, eviction_policy="evict_first")
        if PDL:
            tl.extra.cuda.gdc_wait()  # x and everything the caller reads next belong to earlier kernels
            tl.extra.cuda.gdc_launch_dependents()
        acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
        acc_u = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
        squares = tl.zeros((BLOCK_K,), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            kk = k0 + ks
            x = tl.load(x_ptr + kk, mask=kk < K, other=0.0).to(tl.float32)
            if NORM:  # rms_norm(x) * g = x * g / rms(x): the 1 / rms factor is applied to the sums at the end
                squares += x * x
                x = x * tl.load(g_ptr + kk, mask=kk < K, other=0.0).to(tl.float32)
            nk = kk[None, :] + BLOCK_K  # the next tile is requested before this one is used: two in flight
            w_next = tl.load(w_rows + nk, mask=row_ok & (nk < K), other=0.0, eviction_policy="evict_first")
            acc += w.to(tl.float32) * x[None, :]
            w = w_next
            if PAIRED:
                u_next = tl.load(u_rows + nk, mask=row_ok & (nk < K), other=0.0, eviction_policy="evict_first")
                acc_u += u.to(tl.float32) * x[None, :]
                u = u_next
        y = tl.sum(acc, axis=1)
        y_u = tl.sum(acc_u, axis=1)
        if NORM:
            inv_rms = tl.rsqrt(tl.sum(squares, axis=0) / K + eps)
            y, y_u = y * inv_rms, y_u * inv_rms
        return y, y_u

    return row_sums


def autotune_configs(configs=None):
    import triton

    return [triton.Config({"BLOCK_N": n, "BLOCK_K": k}, num_warps=w, num_stages=1) for n, k, w in configs or CONFIGS]


#: the config of a product at least 4x as deep as it is tall (K >= 4N: the MLP's down projection) in the decode step
#: (`pdl`). The autotuner times each kernel alone with L2 flushed; in the step, where the first weight tiles come in
#: while the kernel before ends, one row per program beat its pick (two) at both 2B and 7B: chosen by
#: bench/bench_gemv_step.py (docs/benchmarks.md, "GEMV (one-row products)", which holds the other picks' margins).
DEEP_STEP_CONFIG = (1, 1024, 4)


def step_configs(n: int, k: int, pdl: bool) -> tuple | None:
    """The configs `gemv` chooses from for an (n, k) product: one for a deep product in the decode step, else
    None (the autotuner's `CONFIGS`)."""
    return (DEEP_STEP_CONFIG,) if pdl and k >= 4 * n else None


@functools.cache
def _kernel(configs: tuple | None = None):
    import triton
    import triton.language as tl

    row_sums = _row_sums()

    @triton.autotune(configs=autotune_configs(configs), key=["N", "K", "NORM", "SWIGLU", "RESIDUAL", "PDL"])
    @triton.jit
    def gemv_kernel(x_ptr, w_ptr, b_ptr, g_ptr, r_ptr, y_ptr, N, K, eps, HAS_BIAS: tl.constexpr,
                    NORM: tl.constexpr, SWIGLU: tl.constexpr, RESIDUAL: tl.constexpr, PDL: tl.constexpr,
                    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        w_rows = w_ptr + rows[:, None].to(tl.int64) * K
        u_rows = w_ptr + (rows[:, None] + N).to(tl.int64) * K  # SWIGLU: the up half of a (2N, K) gate/up weight
        y, y_u = row_sums(x_ptr, g_ptr, w_rows, u_rows, rows[:, None] < N, K, eps, NORM, SWIGLU, PDL, BLOCK_N,
                          BLOCK_K)
        out_ok = rows < N
        if HAS_BIAS:
            y += tl.load(b_ptr + rows, mask=out_ok, other=0.0).to(tl.float32)
            if SWIGLU:
                y_u += tl.load(b_ptr + N + rows, mask=out_ok, other=0.0).to(tl.float32)
        if SWIGLU:
            y = y / (1.0 + tl.exp(-y)) * y_u
        if RESIDUAL:
            y += tl.load(r_ptr + rows, mask=out_ok, other=0.0).to(tl.float32)
        tl.store(y_ptr + rows, y.to(y_ptr.dtype.element_ty), mask=out_ok)

    return gemv_kernel


def check_launch(who: str, x, weight, pdl: bool) -> None:
    """What every one-row product kernel here needs of its input, weight and launch (`who` names it in the error)."""
    if not usable(x, weight):
        raise ValueError(f"{who}: expected one fp16/bf16 CUDA row of length {weight.shape[1]} and a contiguous weight "
                         f"of its dtype; got x {tuple(x.shape)} {x.dtype} on {x.device}, weight {tuple(weight.shape)} "
                         f"{weight.dtype}")
    if pdl and not pdl_supported(x.device):
        raise ValueError(f"{who}: pdl=True needs compute capability 9.0+ and a Triton with programmatic dependent "
                         f"launch; {torch.cuda.get_device_name(x.device)} / this Triton has not both")


def _check_epilogue(weight, bias, norm, swiglu: bool, residual):
    """The lengths the kernel reads without bounds of their own; returns (output length, K)."""
    n, k = weight.shape
    if swiglu and n % 2:
        raise ValueError("gemv: swiglu needs gate and up stacked, an even number of rows; got weight "
                         f"{tuple(weight.shape)}")
    for name, t, want in (("bias", bias, n), ("norm", norm, k), ("residual", residual, n // 2 if swiglu else n)):
        if t is not None and t.numel() != want:
            raise ValueError(f"gemv: {name} must hold {want} values for weight {tuple(weight.shape)}"
                             f"{' with swiglu' if swiglu else ''}; got shape {tuple(t.shape)}")
    return (n // 2 if swiglu else n), k


def gemv(x, weight, bias=None, *, norm=None, eps: float = 0.0, swiglu: bool = False, residual=None,
         pdl: bool = False):
    """x (..., K) holding one row, weight (N, K), bias (N,) or None → (..., N) in x's dtype, with the decoder
    layer's element-wise neighbours folded in:
      * norm (K,): the input is `rms_norm(x, norm, eps)` (fp32 throughout, one rounding at the output);
      * swiglu: weight is gate and up stacked (2M, K) (bias (2M,)); the output (..., M) is silu(gate) * up;
      * residual (..., N): added to the output;
      * pdl: launched as a programmatic dependent launch (`pdl_supported`): its first weight tile is read while
        the kernel before it finishes.
    """
    check_launch("gemv", x, weight, pdl)
    n, k = _check_epilogue(weight, bias, norm, swiglu, residual)
    y = torch.empty(x.shape[:-1] + (n,), dtype=x.dtype, device=x.device)
    grid = lambda meta: ((n + meta["BLOCK_N"] - 1) // meta["BLOCK_N"],)
    kernel = _kernel(step_configs(n, k, pdl))
    kernel[grid](x.contiguous(), weight, bias if bias is not None else weight, norm if norm is not None else weight,
                 residual.contiguous() if residual is not None else y, y, n, k, float(eps), HAS_BIAS=bias is not None,
                 NORM=norm is not None, SWIGLU=swiglu, RESIDUAL=residual is not None, PDL=pdl, **launch(pdl))
    return y


def gemv_reference(x, weight, bias=None, *, norm=None, eps: float = 0.0, swiglu: bool = False, residual=None,
                   pdl: bool = False):
    """`gemv` in torch, fp32 throughout and one rounding (any number of rows, any device): the CPU form of the
    fused decode step and the kernel's oracle. `pdl` is accepted and means nothing here."""
    _check_epilogue(weight, bias, norm, swiglu, residual)
    h = x.float()
    if norm is not None:
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps) * norm.float()
    y = F.linear(h, weight.float(), None if bias is None else bias.float())
    if swiglu:
        gate, up = y.chunk(2, dim=-1)
        y = F.silu(gate) * up
    if residual is not None:
        y = y + residual.float()
    return y.to(x.dtype)


def _triton_is_faster(x, weight, bias) -> bool:
    from triton.testing import do_bench  # flushes L2 between runs: a decode step's weights are never cached

    time = lambda fn: do_bench(fn, return_mode="median")
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
