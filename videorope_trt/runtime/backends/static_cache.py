"""The PyTorch fast path: the model's decoder over a static KV cache, with a CUDA-graphed decode step.

Same weights and same math as `models/decoder.py` (its `rms_norm` and `mlp` are reused), but
  * K/V are written in place into (B, KV, rows, D) buffers at `cache_position` (index_copy_), never
    concatenated, so every decode step has the same shapes and addresses and can be captured in a CUDA graph;
    `rows` is the capacity rounded up to `SPLIT` (the extra rows stay masked);
  * prefill (S > 1) is SDPA over the filled cache rows: causal aligned to the last key when no row is padded
    (flash attention skips the masked blocks), else a boolean causal + padding mask;
  * decode (S = 1) is grouped-query attention written as batched matrix products over the whole cache, split
    into `SPLIT`-row blocks so that one token's attention spreads over the whole GPU (SDPA's kernels give a
    single query only batch x heads thread blocks, and its GQA support does not take a mask);
  * lm_head runs on the last token only (prefill chunks never materialize (S, vocab) logits);
  * the rotation is the fused CUDA kernel (`plugins.cuda`) on the projections' (B, S, H, D) layout when a kernel
    library is given, else the torch op;
  * `compile=True` fuses the decode step's element-wise work (norms, SwiGLU, softmax) with torch.compile.

    embeds (B, S, H) ─ per layer: h = rms(x); q, k, v = proj(h); q, k = VideoRope(q, k)
                                  cache_k[:, :, pos] = k; cache_v[:, :, pos] = v
                                  x += o_proj(attention(q, cache_k, cache_v, mask)); x += mlp(rms(x))
                     ─ logits = lm_head(rms(x[:, -1]))  (B, vocab)
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from videorope_trt.models.decoder import rms_norm
from videorope_trt.plugins.contract import LAYOUT_BSHD
from videorope_trt.plugins.torch_op import apply as video_rope

#: cache rows per block of the split decode attention (and the cache's row granularity)
SPLIT = 256


def swiglu(gate, up):
    return F.silu(gate) * up


def decode_attention(q, keys, values, bias, scale: float):
    """One query token against the whole cache: q (B, Hq, 1, D), keys/values (B, KV, R, D), bias (B, 1, 1, R)
    fp32 (0 or a large negative); returns (B, Hq, 1, D).

    Query heads h*G .. h*G+G-1 share KV head h (as transformers' repeat_kv). Scores and probabilities are the
    input dtype's matrix products with fp32 softmax, as transformers' eager attention rounds them. P·V is summed
    over `SPLIT`-row blocks so the product has B*KV*R/SPLIT independent pieces.
    """
    b, hq, _, d = q.shape
    kv, rows = keys.shape[1], keys.shape[2]
    g, n = hq // kv, rows // SPLIT
    scores = torch.matmul(q.reshape(b, kv, g, d) * scale, keys.transpose(2, 3))  # (B, KV, G, R)
    probs = torch.softmax(scores.float() + bias, dim=-1).to(values.dtype)
    blocks = probs.view(b, kv, g, n, SPLIT).transpose(2, 3)  # (B, KV, n, G, SPLIT)
    out = torch.matmul(blocks, values.view(b, kv, n, SPLIT, d)).float().sum(2)  # (B, KV, G, D)
    return out.to(q.dtype).reshape(b, hq, 1, d)


class StaticCacheDecoder:
    def __init__(self, model, batch: int, capacity: int, kernel_lib=None, compile: bool = False):
        self.model = model
        text = model.text_model
        self.layers = text.layers
        attn = self.layers[0].self_attn
        self.head_dim = int(model.rope.head_dim)
        self.kv_heads = attn.k_proj.out_features // self.head_dim
        dtype, device = model.dtype, model.hf.lm_head.weight.device
        self.rows = -(-capacity // SPLIT) * SPLIT
        shape = (batch, self.kv_heads, self.rows, self.head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in self.layers]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in self.layers]
        self.capacity = capacity
        self.rope = (model.inv_freq.to(device), model.axis_map.to(device), model.rope.attrs)
        self.kernel = None
        if kernel_lib is not None and device.type == "cuda":
            from videorope_trt.plugins import cuda as vr_cuda

            self.kernel = vr_cuda.load(str(kernel_lib))
        fuse = (lambda f: torch.compile(f, dynamic=False)) if compile else (lambda f: f)
        self.norm, self.swiglu, self.decode_attention = fuse(rms_norm), fuse(swiglu), fuse(decode_attention)

    def _rotate(self, q, k, positions):
        """q (B, S, Hq, D), k (B, S, KV, D) as the projections give them → rotated, in the same layout."""
        inv_freq, axis_map, attrs = self.rope
        if self.kernel is not None:
            from videorope_trt.plugins import cuda as vr_cuda

            # in place, in the projections' own layout: no transposed copies
            return vr_cuda.rotate(q, positions, inv_freq, axis_map, replace(attrs, layout=LAYOUT_BSHD), k=k,
                                  out_q=q, out_k=k, lib=self.kernel)
        bhsd = lambda t: video_rope(t.transpose(1, 2).contiguous(), positions, inv_freq, axis_map, attrs)  # noqa: E731
        return bhsd(q).transpose(1, 2), bhsd(k).transpose(1, 2)

    def _attention(self, i, attn, h, positions, cache_position, mask, keys):
        b, s, _ = h.shape
        d = self.head_dim
        q = attn.q_proj(h).view(b, s, -1, d)  # (B, S, Hq, D)
        k = attn.k_proj(h).view(b, s, -1, d)  # (B, S, KV, D)
        v = attn.v_proj(h).view(b, s, -1, d)
        q, k = self._rotate(q, k, positions)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        self.keys[i].index_copy_(2, cache_position, k)
        self.values[i].index_copy_(2, cache_position, v)
        if s == 1:
            out = self.decode_attention(q, self.keys[i], self.values[i], mask, d**-0.5)
        else:
            groups = q.shape[1] // self.kv_heads
            kr = self.keys[i][:, :, :keys].repeat_interleave(groups, dim=1)
            vr = self.values[i][:, :, :keys].repeat_interleave(groups, dim=1)
            out = F.scaled_dot_product_attention(q, kr, vr, attn_mask=mask, scale=d**-0.5)
        return attn.o_proj(out.transpose(1, 2).reshape(b, s, -1))

    def _mask(self, attention_mask, cache_position, s: int, keys: int):
        """Decode: an fp32 bias (B, 1, 1, rows) over the whole cache (rows past `keys` blocked); prefill without
        padding: the causal mask aligned to the last key (flash attention's own causal form, no mask tensor);
        prefill with padding: a boolean (B, 1, S, keys) causal + padding mask."""
        if s == 1:
            allowed = torch.zeros((attention_mask.shape[0], self.rows), dtype=torch.bool, device=attention_mask.device)
            allowed[:, :keys] = attention_mask.bool()
            blocked = torch.finfo(torch.float32).min
            return torch.where(allowed, 0.0, blocked)[:, None, None]
        if bool(attention_mask.all()):  # one host sync per prefill chunk
            from torch.nn.attention.bias import causal_lower_right

            return causal_lower_right(s, keys)  # query i sees keys <= keys - s + i = cache_position[i]
        key_idx = torch.arange(keys, device=attention_mask.device)
        causal = key_idx[None, :] <= cache_position[:, None]  # (S, keys)
        return (causal[None] & attention_mask[:, None, :].bool())[:, None]

    def forward(self, inputs_embeds, positions, attention_mask, cache_position, keys: int):
        """Append S tokens at `cache_position` (S,) and attend over the first `keys` cache rows.

        attention_mask (B, keys) int64 marks real (1) and padding (0) tokens of the cache rows; returns the
        last token's logits (B, vocab) in fp32.
        """
        s = inputs_embeds.shape[1]
        positions = positions.contiguous()  # prefill chunks are slices of the prompt's (A, B, L) positions
        mask = self._mask(attention_mask, cache_position, s, keys)
        norm = self.norm if s == 1 else rms_norm
        act = self.swiglu if s == 1 else swiglu
        x = inputs_embeds.to(self.model.dtype)
        for i, layer in enumerate(self.layers):
            ln = layer.input_layernorm
            x = x + self._attention(i, layer.self_attn, norm(x, ln.weight, ln.variance_epsilon), positions,
                                    cache_position, mask, keys)
            ln, m = layer.post_attention_layernorm, layer.mlp
            h = norm(x, ln.weight, ln.variance_epsilon)
            x = x + m.down_proj(act(m.gate_proj(h), m.up_proj(h)))
        final = self.model.text_model.norm
        last = norm(x[:, s - 1 :], final.weight, final.variance_epsilon)
        return self.model.hf.lm_head(last)[:, 0].float()


class GraphedDecode:
    """One decode step (S = 1, attention over the whole cache) captured in a CUDA graph and replayed.

    Captured when the cache is allocated (length 0): the warm-up and capture runs write K/V rows at position 0,
    which the prefill overwrites. Inputs are copied into static buffers before each replay; rows beyond the
    filled length are masked out, so attending over the whole cache gives the same result.
    """

    def __init__(self, dec: StaticCacheDecoder, batch: int, hidden: int, num_axes: int, warmup: int = 2):
        device, cap = dec.keys[0].device, dec.capacity
        self.dec = dec
        self.embeds = torch.zeros((batch, 1, hidden), dtype=dec.model.dtype, device=device)
        self.positions = torch.zeros((num_axes, batch, 1), dtype=torch.float32, device=device)
        self.mask = torch.zeros((batch, cap), dtype=torch.int64, device=device)
        self.cache_position = torch.zeros(1, dtype=torch.int64, device=device)
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                self._step()
        torch.cuda.current_stream(device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = self._step()

    def _step(self):
        return self.dec.forward(self.embeds, self.positions, self.mask, self.cache_position, self.dec.capacity)

    def __call__(self, inputs_embeds, positions, attention_mask, cache_position):
        self.embeds.copy_(inputs_embeds)
        self.positions.copy_(positions)
        self.mask[:, : attention_mask.shape[1]] = attention_mask
        self.mask[:, attention_mask.shape[1] :] = 0
        self.cache_position.copy_(cache_position)
        self.graph.replay()
        return self.logits.clone()
