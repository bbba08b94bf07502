"""The decode step's MLP as one kernel, in Triton: RMS norm, gate/up product, SwiGLU and the down product of one
token, the output added into an fp32 sum.

As two kernels (`gemv.gemv` with swiglu, then the down product with the residual) the down product waits for every
program of the first: each of its outputs needs the whole hidden vector h. Here each program owns BLOCK_H entries
of h instead. It works them out from its gate and up weight rows (`gemv._row_sums`, the input RMS-normed on the
way in), rounds them to the model's dtype as the unfused product's output would be, and multiplies them at once
with the matching BLOCK_H columns of the down weight (each of its rows read as one contiguous run), adding its
share of all K outputs into `acc` with atomic adds. No program waits for another, and the layer has one kernel
boundary fewer.

The caller keeps `acc` at zero before the call and adds it to x where x is next read, as `gemv.gemv(x_add=...,
residual_add=...)` and `rope_cache.project_into_cache(x_add=...)` do, rounded once as the unfused residual add
was (`gemv.add_rounded`). The atomic adds come in no fixed order, so `acc` can differ from run to run in its last
fp32 bits. `mlp_reference` is the same in torch. Triton is imported only here, when first used.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from videorope_trt.runtime.backends import gemv

#: (h entries per program, gate/up tile width, down rows per step, warps) the autotuner tries
CONFIGS = ((32, 256, 64, 8), (64, 128, 64, 8), (16, 512, 128, 4), (32, 256, 128, 4), (64, 256, 32, 8))


@functools.cache
def _kernel():
    import triton
    import triton.language as tl

    row_sums = gemv._row_sums()
    configs = [triton.Config({"BLOCK_H": h, "BLOCK_K": k, "BLOCK_M": m}, num_warps=w, num_stages=1)
               for h, k, m, w in CONFIGS]

    # restore_value: the autotuner's trial runs add into acc too; it is put back after each
    @triton.autotune(configs=configs, key=["N", "K", "PDL"], restore_value=["acc_ptr"])
    @triton.jit
    def mlp_kernel(x_ptr, g_ptr, w_ptr, d_ptr, acc_ptr, N, K, eps, PDL: tl.constexpr, BLOCK_H: tl.constexpr,
                   BLOCK_K: tl.constexpr, BLOCK_M: tl.constexpr):
        j = tl.program_id(0) * BLOCK_H + tl.arange(0, BLOCK_H)  # this program's entries of h
        ok = j < N
        rows = tl.arange(0, BLOCK_M)
        down_cols = d_ptr + j[None, :]  # the down weight is (K, N): column j of each row
        # the first down tile depends on nothing: asked for before the gate/up loop (and its wait)
        w = tl.load(down_cols + rows[:, None].to(tl.int64) * N, mask=(rows < K)[:, None] & ok[None, :], other=0.0,
                    eviction_policy="evict_first")
        gate, up = row_sums(x_ptr, x_ptr, g_ptr, w_ptr + j[:, None].to(tl.int64) * K,
                            w_ptr + (j[:, None] + N).to(tl.int64) * K, ok[:, None], K, eps, False, True, True, PDL,
                            BLOCK_H, BLOCK_K)
        h = gate / (1.0 + tl.exp(-gate)) * up
        h = tl.where(ok, h.to(x_ptr.dtype.element_ty).to(tl.float32), 0.0)
        for m0 in range(0, K, BLOCK_M):
            nxt = rows + BLOCK_M  # the next tile is requested before this one is used
            w_next = tl.load(down_cols + nxt[:, None].to(tl.int64) * N, mask=(nxt < K)[:, None] & ok[None, :],
                             other=0.0, eviction_policy="evict_first")
            tl.atomic_add(acc_ptr + rows, tl.sum(w.to(tl.float32) * h[None, :], axis=1), mask=rows < K,
                          sem="relaxed")
            w, rows = w_next, nxt

    return mlp_kernel


def _check(x, gate_up, down, norm, acc):
    two_n, k = gate_up.shape
    if two_n % 2 or down.shape != (k, two_n // 2) or norm.numel() != k or not down.is_contiguous():
        raise ValueError(f"fused_mlp: expected gate/up stacked (2N, K), down (K, N) contiguous and a norm of K; got "
                         f"gate/up {tuple(gate_up.shape)}, down {tuple(down.shape)}, norm {tuple(norm.shape)}")
    if acc.shape != (k,) or acc.dtype != torch.float32 or acc.device != x.device or not acc.is_contiguous():
        raise ValueError(f"fused_mlp: expected the sum as ({k},) fp32 on {x.device}; got {tuple(acc.shape)} "
                         f"{acc.dtype} on {acc.device}")


def mlp(x, gate_up, down, norm, eps: float, acc, pdl: bool = False):
    """x (..., K) one row; gate_up (2N, K) gate and up stacked, down (K, N), norm (K,) the MLP's input RMS norm;
    acc (K,) fp32 gets down(silu(gate) * up) added; returns acc. `pdl`: as `gemv.gemv`."""
    gemv.check_launch("fused_mlp", x, gate_up, pdl)
    _check(x, gate_up, down, norm, acc)
    n, k = gate_up.shape[0] // 2, gate_up.shape[1]
    grid = lambda meta: ((n + meta["BLOCK_H"] - 1) // meta["BLOCK_H"],)  # noqa: E731
    _kernel()[grid](x.contiguous(), norm, gate_up, down, acc, n, k, float(eps), PDL=pdl, **gemv.launch(pdl))
    return acc


def mlp_reference(x, gate_up, down, norm, eps: float, acc, pdl: bool = False):
    """`mlp` in torch (any device and dtype): h as `gemv.gemv_reference` rounds it, then the down product in fp32
    added into acc. `pdl` is accepted and means nothing here."""
    _check(x, gate_up, down, norm, acc)
    h = gemv.gemv_reference(x, gate_up, None, norm=norm, eps=eps, swiglu=True)
    acc += F.linear(h.float(), down.float()).reshape(-1)
    return acc
