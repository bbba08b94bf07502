"""The Qwen2 decoder forward, written out so export, the PyTorch runtime and the parity tests share one code path.

Weights are the stock transformers modules (`Qwen2VLTextModel.layers`, `.norm`, the `lm_head`); only the forward
is ours: the rotation goes through the `VideoRope` torch op with the model's (positions, inv_freq, axis_map), and
the KV cache is explicit tensors in and out (no transformers Cache object), which is what an exported graph needs.

    inputs_embeds (B, S, H) ─┬─ for each layer: x += attn(rms(x)); x += mlp(rms(x))
    positions (A, B, S) f32  │     attn: q, k, v = proj(x); q, k = VideoRope(q | k); k, v = past ++ (k, v)
    attention_mask (B, P+S) ─┘           softmax(q kᵀ / √D + mask) v → o_proj
                                 logits = lm_head(rms(x))  (B, S, vocab);  present = [(k, v)] (B, KV, P+S, D)

`decoder_forward_cached` is the same decoder over caller-owned caches, the form engines run: `VideoRopeCache`
rotates q and k and writes k and v into (B, KV, C, D) caches at each sequence's write offset (in place in
TensorRT), and attention reads the first T cache rows (T = the attention mask's length):

    inputs_embeds (B, S, H), positions (A, B, S) f32, attention_mask (B, T) int64, write_offset (B,) int32,
    caches [(k, v)] (B, KV, C, D)  →  logits (B, S or 1, vocab), caches with rows offset..offset+S-1 written
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from videorope_trt.plugins.torch_op import apply as video_rope, apply_cache
from videorope_trt.rope.contract import LAYOUT_BSHD


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm in fp32, weight applied in the input dtype (as Qwen2)."""
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def mlp(m, x: torch.Tensor) -> torch.Tensor:
    """SwiGLU: down(silu(gate(x)) * up(x))."""
    return m.down_proj(F.silu(m.gate_proj(x)) * m.up_proj(x))


def additive_mask(attention_mask: torch.Tensor, s: int, dtype: torch.dtype) -> torch.Tensor:
    """(B, 1, S, P+S) additive mask: query i (absolute P+i) sees key j when j <= P+i and key j is not padding.

    Blocked entries get the dtype's lowest finite value, not -inf, so a fully padded query row stays finite.
    """
    total = attention_mask.shape[1]
    q_abs = torch.arange(s, device=attention_mask.device) + (total - s)
    k_idx = torch.arange(total, device=attention_mask.device)
    allowed = (k_idx[None, :] <= q_abs[:, None])[None] & attention_mask[:, None, :].bool()  # (B, S, P+S)
    blocked = torch.tensor(torch.finfo(dtype).min, dtype=dtype, device=attention_mask.device)
    zero = torch.zeros((), dtype=dtype, device=attention_mask.device)
    return torch.where(allowed, zero, blocked)[:, None]


def attention(attn, x, positions, rope_args, mask, past_kv):
    """One self-attention block; returns (output (B, S, H), present (k, v) each (B, KV, P+S, D))."""
    inv_freq, axis_map, attrs, head_dim = rope_args
    b, s, _ = x.shape
    q = attn.q_proj(x).view(b, s, -1, head_dim).transpose(1, 2)  # (B, Hq, S, D)
    k = attn.k_proj(x).view(b, s, -1, head_dim).transpose(1, 2)  # (B, KV, S, D)
    v = attn.v_proj(x).view(b, s, -1, head_dim).transpose(1, 2)
    q = video_rope(q, positions, inv_freq, axis_map, attrs)
    k = video_rope(k, positions, inv_freq, axis_map, attrs)
    if past_kv is not None:
        k = torch.cat((past_kv[0].to(k.dtype), k), dim=2)
        v = torch.cat((past_kv[1].to(v.dtype), v), dim=2)
    groups = q.shape[1] // k.shape[1]
    # Grouped-query attention by repeating K/V heads: plain ops that every exporter and backend understands.
    kr, vr = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    out = F.scaled_dot_product_attention(q, kr, vr, attn_mask=mask, scale=head_dim**-0.5)
    return attn.o_proj(out.transpose(1, 2).reshape(b, s, -1)), (k, v)


def decoder_forward(text_model, lm_head, inputs_embeds, positions, attention_mask, past, rope_args):
    """Run every layer, the final norm and lm_head; returns (logits (B, S, vocab), present list[(k, v)])."""
    s = inputs_embeds.shape[1]
    _check_inputs(text_model, inputs_embeds, positions, attention_mask, past)
    mask = additive_mask(attention_mask, s, inputs_embeds.dtype)
    x, present = inputs_embeds, []
    for i, layer in enumerate(text_model.layers):
        eps = layer.input_layernorm.variance_epsilon
        h, kv = attention(layer.self_attn, rms_norm(x, layer.input_layernorm.weight, eps), positions, rope_args,
                          mask, None if past is None else past[i])
        x = x + h
        ln = layer.post_attention_layernorm
        x = x + mlp(layer.mlp, rms_norm(x, ln.weight, ln.variance_epsilon))
        present.append(kv)
    x = rms_norm(x, text_model.norm.weight, text_model.norm.variance_epsilon)
    return lm_head(x), present


def _check_inputs(text_model, inputs_embeds, positions, attention_mask, past):
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return  # shapes are symbolic during export; eager calls are checked
    b, s, _ = inputs_embeds.shape
    p = 0 if past is None else past[0][0].shape[2]
    if positions.dim() != 3 or tuple(positions.shape[1:]) != (b, s):
        raise ValueError(f"decoder: positions must be (A, {b}, {s}) for inputs_embeds {tuple(inputs_embeds.shape)}, "
                         f"got {tuple(positions.shape)}")
    if tuple(attention_mask.shape) != (b, p + s):
        raise ValueError(f"decoder: attention_mask must be (B, P+S) = ({b}, {p + s}) with {p} past tokens, "
                         f"got {tuple(attention_mask.shape)}")
    if past is not None and len(past) != len(text_model.layers):
        raise ValueError(f"decoder: past has {len(past)} layers, the model has {len(text_model.layers)}")


def cache_mask(attention_mask: torch.Tensor, write_offset: torch.Tensor, s: int, dtype: torch.dtype) -> torch.Tensor:
    """(B, 1, S, T) additive mask over the first T cache rows: query i of sequence b (cache row write_offset[b] + i)
    sees row j when j <= write_offset[b] + i and attention_mask[b, j] marks a real token. Blocked entries get the
    dtype's lowest finite value, so a fully padded query row stays finite."""
    t = attention_mask.shape[1]
    rows = torch.arange(t, device=attention_mask.device)
    query_rows = write_offset.to(torch.int64)[:, None] + torch.arange(s, device=attention_mask.device)  # (B, S)
    allowed = (rows[None, None, :] <= query_rows[:, :, None]) & attention_mask[:, None, :].bool()  # (B, S, T)
    # made on the device (no host copy): a decode step replayed from a CUDA graph builds this mask too
    blocked = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=attention_mask.device)
    return torch.where(allowed, torch.zeros((), dtype=dtype, device=attention_mask.device), blocked)[:, None]


def attention_cached(attn, x, positions, rope_args, mask, cache, write_offset):
    """One self-attention block over a caller-owned cache; returns (output (B, S, H), the updated (k, v) caches)."""
    from dataclasses import replace

    inv_freq, axis_map, attrs, head_dim = rope_args
    b, s, _ = x.shape
    # the projections' own (B, S, H, D) layout: the op reads it as is and writes the cache's (B, KV, C, D)
    q = attn.q_proj(x).view(b, s, -1, head_dim)
    k = attn.k_proj(x).view(b, s, -1, head_dim)
    v = attn.v_proj(x).view(b, s, -1, head_dim)
    q, k_cache, v_cache = apply_cache(q, k, v, positions, inv_freq, axis_map, cache[0], cache[1], write_offset,
                                      replace(attrs, layout=LAYOUT_BSHD))
    t = mask.shape[-1]
    keys, values = k_cache[:, :, :t], v_cache[:, :, :t]
    groups = q.shape[2] // keys.shape[1]
    kr, vr = keys.repeat_interleave(groups, dim=1), values.repeat_interleave(groups, dim=1)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), kr, vr, attn_mask=mask, scale=head_dim**-0.5)
    return attn.o_proj(out.transpose(1, 2).reshape(b, s, -1)), (k_cache, v_cache)


def decoder_forward_cached(text_model, lm_head, inputs_embeds, positions, attention_mask, write_offset, caches,
                           rope_args):
    """Every layer over its caller-owned (k, v) caches, the final norm and lm_head; returns (logits, caches)."""
    mask = cache_mask(attention_mask, write_offset, inputs_embeds.shape[1], inputs_embeds.dtype)
    x, out = inputs_embeds, []
    for layer, cache in zip(text_model.layers, caches):
        norm = layer.input_layernorm
        h, cache = attention_cached(layer.self_attn, rms_norm(x, norm.weight, norm.variance_epsilon), positions,
                                    rope_args, mask, cache, write_offset)
        x = x + h
        norm = layer.post_attention_layernorm
        x = x + mlp(layer.mlp, rms_norm(x, norm.weight, norm.variance_epsilon))
        out.append(cache)
    x = rms_norm(x, text_model.norm.weight, text_model.norm.variance_epsilon)
    return lm_head(x), out
