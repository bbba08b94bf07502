"""The PyTorch fast path: the model's decoder over a static KV cache, with a CUDA-graphed decode step.

Same weights and same math as `models/decoder.py` (its `rms_norm` and `mlp` are reused), but
  * K/V are written in place into (B, KV, capacity, D) buffers at `cache_position` (index_copy_), never
    concatenated, so every decode step has the same shapes and addresses and can be captured in a CUDA graph;
  * attention is SDPA over the cache with grouped-query heads (`enable_gqa`), a boolean mask (B, 1, S, keys);
  * lm_head runs on the last token only (prefill chunks never materialize (S, vocab) logits);
  * the rotation is the fused CUDA kernel (`plugins.cuda`) when a kernel library is given, else the torch op.

    embeds (B, S, H) ─ per layer: h = rms(x); q, k, v = proj(h); q, k = VideoRope(q, k)
                                  cache_k[:, :, pos] = k; cache_v[:, :, pos] = v
                                  x += o_proj(SDPA(q, cache_k[:keys], cache_v[:keys], mask)); x += mlp(rms(x))
                     ─ logits = lm_head(rms(x[:, -1]))  (B, vocab)
"""

from __future__ import annotations

import torch

from videorope_trt.models.decoder import mlp, rms_norm
from videorope_trt.plugins.torch_op import apply as video_rope


class StaticCacheDecoder:
    def __init__(self, model, batch: int, capacity: int, kernel_lib=None):
        self.model = model
        text = model.text_model
        self.layers = text.layers
        attn = self.layers[0].self_attn
        self.head_dim = int(model.rope.head_dim)
        self.kv_heads = attn.k_proj.out_features // self.head_dim
        dtype, device = model.dtype, model.hf.lm_head.weight.device
        shape = (batch, self.kv_heads, capacity, self.head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in self.layers]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in self.layers]
        self.capacity = capacity
        self.rope = (model.inv_freq, model.axis_map, model.rope.attrs)
        self.kernel = None
        if kernel_lib is not None and device.type == "cuda":
            from videorope_trt.plugins import cuda as vr_cuda

            self.kernel = vr_cuda.load(str(kernel_lib))
        self.graph = None

    def _rotate(self, q, k, positions):
        inv_freq, axis_map, attrs = self.rope
        if self.kernel is not None:
            from videorope_trt.plugins import cuda as vr_cuda

            return vr_cuda.rotate(q, positions, inv_freq, axis_map, attrs, k=k, lib=self.kernel)
        return video_rope(q, positions, inv_freq, axis_map, attrs), video_rope(k, positions, inv_freq, axis_map, attrs)

    def _attention(self, i, attn, h, positions, cache_position, mask, keys):
        b, s, _ = h.shape
        d = self.head_dim
        q = attn.q_proj(h).view(b, s, -1, d).transpose(1, 2)  # (B, Hq, S, D)
        k = attn.k_proj(h).view(b, s, -1, d).transpose(1, 2)  # (B, KV, S, D)
        v = attn.v_proj(h).view(b, s, -1, d).transpose(1, 2)
        q, k = self._rotate(q.contiguous(), k.contiguous(), positions)
        self.keys[i].index_copy_(2, cache_position, k)
        self.values[i].index_copy_(2, cache_position, v)
        out = torch.nn.functional.scaled_dot_product_attention(
            q, self.keys[i][:, :, :keys], self.values[i][:, :, :keys], attn_mask=mask, scale=d**-0.5, enable_gqa=True)
        return attn.o_proj(out.transpose(1, 2).reshape(b, s, -1))

    def forward(self, inputs_embeds, positions, attention_mask, cache_position, keys: int):
        """Append S tokens at `cache_position` (S,) and attend over the first `keys` cache rows.

        attention_mask (B, keys) int64 marks real (1) and padding (0) tokens of the cache rows; returns the
        last token's logits (B, vocab) in fp32.
        """
        s = inputs_embeds.shape[1]
        key_idx = torch.arange(keys, device=inputs_embeds.device)
        causal = key_idx[None, :] <= cache_position[:, None]  # (S, keys)
        mask = (causal[None] & attention_mask[:, None, :].bool())[:, None]  # (B, 1, S, keys)
        x = inputs_embeds.to(self.model.dtype)
        for i, layer in enumerate(self.layers):
            ln = layer.input_layernorm
            x = x + self._attention(i, layer.self_attn, rms_norm(x, ln.weight, ln.variance_epsilon), positions,
                                    cache_position, mask, keys)
            ln = layer.post_attention_layernorm
            x = x + mlp(layer.mlp, rms_norm(x, ln.weight, ln.variance_epsilon))
        norm = self.model.text_model.norm
        last = rms_norm(x[:, s - 1 :], norm.weight, norm.variance_epsilon)
        return self.model.hf.lm_head(last)[:, 0].float()


class GraphedDecode:
    """One decode step (S = 1, attention over the whole capacity) captured in a CUDA graph and replayed.

    Inputs are copied into static buffers before each replay; the cache rows beyond the filled length are
    masked out by the attention mask, so attending over the full capacity gives the same result.
    """

    def __init__(self, dec: StaticCacheDecoder, batch: int, hidden: int, num_axes: int, warmup: int = 2):
        device, cap = dec.keys[0].device, dec.capacity
        self.dec = dec
        self.embeds = torch.zeros((batch, 1, hidden), dtype=dec.model.dtype, device=device)
        self.positions = torch.zeros((num_axes, batch, 1), dtype=torch.float32, device=device)
        self.mask = torch.zeros((batch, cap), dtype=torch.int64, device=device)
        self.cache_position = torch.zeros(1, dtype=torch.int64, device=device)
        saved = [(k.clone(), v.clone()) for k, v in zip(dec.keys, dec.values)]  # warm-up writes into the cache
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                self._step()
        torch.cuda.current_stream(device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = self._step()
        for (k, v), bk, bv in zip(saved, dec.keys, dec.values):
            bk.copy_(k)
            bv.copy_(v)

    def _step(self):
        return self.dec.forward(self.embeds, self.positions, self.mask, self.cache_position, self.dec.capacity)

    def __call__(self, inputs_embeds, positions, attention_mask, cache_position):
        self.embeds.copy_(inputs_embeds)
        self.positions.copy_(positions)
        self.mask.zero_()
        self.mask[:, : attention_mask.shape[1]] = attention_mask
        self.cache_position.copy_(cache_position)
        self.graph.replay()
        return self.logits.clone()
