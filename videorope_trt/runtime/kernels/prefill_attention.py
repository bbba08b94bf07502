"""Chunked-prefill attention in two parts, each on the fast fused kernel, merged by their log-sum-exps.

A prefill chunk of S queries attends the P cache rows before it (all of them) and its own S rows (causally). SDPA
given the whole thing as one causal mask aligned to the last key runs on the older flash kernel, at a fraction of
the rate of cuDNN's fused attention, which takes each part alone (no mask; causal with as many queries as keys):
measured by bench/bench_prefill.py (docs/benchmarks.md, "Prefill"). Softmax over the union of two key sets is
the two partial outputs weighted by exp(lse_part - lse_all), lse_all = logaddexp(lse_1, lse_2): exact up to
rounding, and nothing of size (S, P) is ever formed.
"""

from __future__ import annotations

import torch


def merge_partials(out1, lse1, out2, lse2, dtype=None):
    """Attention outputs (B, H, S, D) over two disjoint key sets and their log-sum-exps (B, H, S[, 1]) → the
    output over both (B, H, S, D), computed in fp32 and given in `dtype` (None: fp32), stored token by token
    ((B, S, H, D) in memory, as the output projection reads it: compiled, one kernel writes it so)."""
    lse1, lse2 = (x.reshape(out1.shape[:-1] + (1,)).float() for x in (lse1, lse2))
    lse = torch.logaddexp(lse1, lse2)
    out = out1.float() * torch.exp(lse1 - lse) + out2.float() * torch.exp(lse2 - lse)
    return out.to(dtype or torch.float32).transpose(1, 2).contiguous().transpose(1, 2)


def cudnn_partial(q, k, v, causal: bool, scale: float):
    """(output, log-sum-exp) of cuDNN's fused attention (grouped-query heads as given)."""
    out = torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, None, True, 0.0, causal, False, scale=scale)
    return out[0], out[1]


def cudnn_attention_problem(q_heads: int, kv_heads: int, head_dim: int, dtype, device) -> str | None:
    """Why cuDNN's fused attention cannot run these heads here (None: it can), found by one small call."""
    device = torch.device(device)
    if device.type != "cuda":
        return f"cuDNN attention needs a CUDA device, the device is {device}"
    if not hasattr(torch.ops.aten, "_scaled_dot_product_cudnn_attention"):
        return f"this torch ({torch.__version__}) has no cuDNN attention"
    q = torch.zeros(1, q_heads, 2, head_dim, dtype=dtype, device=device)
    k = torch.zeros(1, kv_heads, 2, head_dim, dtype=dtype, device=device)
    try:
        cudnn_partial(q, k, k, True, head_dim**-0.5)
    except RuntimeError as e:
        return f"cuDNN attention refuses {q_heads} query / {kv_heads} key heads of {head_dim} in {dtype}: {e}"[:300]
    return None


def split_causal_attention(q, k, v, scale: float, partial=cudnn_partial, merge=merge_partials):
    """q (B, Hq, S, D) for the last S of the keys k/v (B, KV, P + S, D), causal aligned to the last key; `merge`
    is `merge_partials` or a compiled form of it. q may be a (B, S, Hq, D) tensor transposed (the projection's
    layout, no copy): the kernels take any layout whose channels are contiguous."""
    past = k.shape[2] - q.shape[2]
    if past <= 0:
        return partial(q, k, v, True, scale)[0]
    out1, lse1 = partial(q, k[:, :, :past], v[:, :, :past], False, scale)
    out2, lse2 = partial(q, k[:, :, past:], v[:, :, past:], True, scale)
    return merge(out1, lse1, out2, lse2, q.dtype)
