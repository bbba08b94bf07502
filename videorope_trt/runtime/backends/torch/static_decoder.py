"""The PyTorch fast path: the model's decoder over a static KV cache, with a CUDA-graphed decode step.

Same weights and same math as `models/decoder.py` (its `rms_norm` and `mlp` are reused), but
  * K/V are written in place into (B, KV, rows, D) buffers at `cache_position` (index_copy_), never
    concatenated, so every decode step has the same shapes and addresses and can be captured in a CUDA graph;
    `rows` is the capacity rounded up to `SPLIT` (the extra rows stay masked);
  * prefill (S > 1) is SDPA over the filled cache rows: causal aligned to the last key when no row is padded
    (flash attention skips the masked blocks), else a boolean causal + padding mask;
  * decode (S = 1) is grouped-query attention written as batched matrix products over the whole cache, split
    into `SPLIT`-row blocks so that one token's attention spreads over the whole GPU (SDPA's kernels give a
    single query only batch x heads thread blocks, and its GQA support does not take a mask); with
    `triton_decode=True` on CUDA it is `flash_decode` (the same split, one fused kernel and a combine);
  * q/k/v and gate/up are one matrix product each (`fuse_projections`: the separate weights become views of one
    buffer, so memory does not grow and the model's own decoder reads the same numbers);
  * prefill attention is SDPA with grouped-query heads (`enable_gqa`: no repeated K/V copies), or with
    `split_prefill=True` (CUDA, no padding) the chunk against earlier rows and against itself as two cuDNN
    attentions merged by their log-sum-exps (`prefill_attention.py`);
  * lm_head runs on the last token only (prefill chunks never materialize (S, vocab) logits), and of a prefill
    chunk the last layer attends and runs its MLP for that token alone (after writing every token's K/V); a
    chunk whose logits nobody reads (`logits=False`) stops at those K/V writes. The MLP of a
    prefill chunk runs in pieces whose gate/up activation stays under `MLP_BYTES`, each piece one call (with
    `compile=True` one compiled function: norm, product, SwiGLU, product) added into the residual in place;
  * every matrix product goes through `linear` (default `F.linear`; the backend passes `gemv.OneRowLinear`, which
    sends decode's one-row products to the faster of a Triton GEMV and cuBLAS per shape);
  * the rotation is the fused CUDA kernel (`plugins.cuda`) on the projections' (B, S, H, D) layout when a kernel
    library is given, else the torch op;
  * `compile=True` fuses the element-wise work (norms, SwiGLU; decode's softmax) with torch.compile (inductor's
    block-size search on: `vision_tower.COMPILE_OPTIONS`);
  * `decode_graph.GraphedDecode` captures the whole decode step (embedding, positions, mask, layers, lm_head) in
    one graph;
  * with `decode_ops` (`DecodeOps.triton()` on CUDA), one token of batch 1 runs six kernels per layer instead
    of about fifteen: the norms folded into the GEMVs' inputs, SwiGLU and the residual adds into their outputs, the
    rotation and both cache writes into the q/k/v product's, each launched as a programmatic dependent launch
    where the GPU has it (`_decode_fused`).

    embeds (B, S, H) ─ per layer: h = rms(x); q, k, v = proj(h); q, k = VideoRope(q, k)
                                  cache_k[:, :, pos] = k; cache_v[:, :, pos] = v
                                  x += o_proj(attention(q, cache_k, cache_v, mask)); x += mlp(rms(x))
                     ─ logits = lm_head(rms(x[:, -1]))  (B, vocab)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention.bias import CausalBias, causal_lower_right

from videorope_trt.models.decoder import rms_norm
from videorope_trt.models.vision_tower import COMPILE_OPTIONS
from videorope_trt.plugins.torch_op import apply as video_rope
from videorope_trt.rope.contract import LAYOUT_BSHD
from videorope_trt.runtime.kernels.prefill_attention import merge_partials

#: cache rows per block of the split decode attention (and the cache's row granularity)
SPLIT = 256
#: most bytes of one prefill MLP call's (tokens, 2 x intermediate) gate/up activation, the largest of a chunk (155
#: MB for 2048 tokens at 7B). Per-token work, so splitting changes nothing but the peak and the number of calls,
#: and each call costs host time (bench/bench_runtime.py --profile shows the host queue against the kernels;
#: docs/benchmark-log.md, "32k: time to first token without host stalls", runs 1-5). 128 MB: a 32k chunk in 10
#: calls at 2B, 20 at 7B; 1024 tokens in one.
MLP_BYTES = 128_000_000


def swiglu(gate, up):
    return F.silu(gate) * up


def mlp_block(x, norm_weight, eps: float, gate_up, down, down_bias):
    """down(SwiGLU(gate_up(rms_norm(x)))) for a prefill piece: one function, so torch.compile makes it one call."""
    gate, up = F.linear(rms_norm(x, norm_weight, eps), gate_up).chunk(2, dim=-1)
    return F.linear(swiglu(gate, up), down, down_bias)


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


def _fuse(mods, name: str):
    """One (sum of rows, in) buffer holding `name` ("weight" or "bias") of every module in `mods`, whose own
    parameters become row views of it (no second copy). Already fused (same storage, back to back): reused."""
    params = [getattr(m, name) for m in mods]
    if any(p is None for p in params):
        return None
    first, rows = params[0], sum(p.shape[0] for p in params)
    storage, offset = first.untyped_storage(), first.storage_offset()
    adjacent = all(p.untyped_storage().data_ptr() == storage.data_ptr() and p.is_contiguous() for p in params)
    adjacent = adjacent and all(b.storage_offset() == a.storage_offset() + a.numel()
                                for a, b in zip(params, params[1:]))
    if adjacent:
        return torch.empty(0, dtype=first.dtype, device=first.device).set_(storage, offset, (rows,) + first.shape[1:])
    with torch.no_grad():
        fused = torch.cat([p.detach() for p in params])
        r0 = 0
        for p in params:
            p.data = fused[r0 : r0 + p.shape[0]]  # the module keeps working, now on a view of the fused buffer
            r0 += p.shape[0]
    return fused


def fuse_projections(layers) -> list:
    """Per layer (qkv weight, qkv bias or None, gate_up weight): three and two matrix products become one each.
    Memory does not grow: the separate q/k/v and gate/up weights are re-pointed at row views of the fused ones."""
    out = []
    for layer in layers:
        a, m = layer.self_attn, layer.mlp
        qkv = [a.q_proj, a.k_proj, a.v_proj]
        out.append((_fuse(qkv, "weight"), _fuse(qkv, "bias"), _fuse([m.gate_proj, m.up_proj], "weight")))
    return out


@functools.cache
def _compiled(fn, dynamic: bool | None = False):
    """`fn` through torch.compile with the vision tower's inductor settings, made once per process: with options,
    making the wrapper copies inductor's configuration, at every cache allocation (measured as setup time by
    bench/bench_runtime.py; docs/benchmark-log.md, "32k: the decode loop on the device, tuned compiles", run 8)."""
    return torch.compile(fn, dynamic=dynamic, options=COMPILE_OPTIONS)


@dataclass(frozen=True)
class DecodeOps:
    """The fused decode step's two kernels (`gemv.gemv`, `rope_cache.project_into_cache` and their signatures) and
    whether they, and `flash_decode`, are launched as programmatic dependent launches."""

    linear: Callable
    project_into_cache: Callable
    pdl: bool = False
    cuda_half_only: bool = True  # the Triton kernels take fp16/bf16 tensors on a CUDA device

    @classmethod
    def triton(cls, pdl: bool | None = None) -> "DecodeOps":
        """The Triton kernels (CUDA); `pdl` None: wherever the GPU and Triton have it."""
        from videorope_trt.runtime.kernels import gemv, rope_cache

        if pdl and not gemv.pdl_supported():
            raise ValueError("pdl=True: programmatic dependent launch needs compute capability 9.0+ and a Triton "
                             f"that has it; this is {torch.cuda.get_device_name()} (pdl=None picks it where it can)")
        return cls(gemv.gemv, rope_cache.project_into_cache, gemv.pdl_supported() if pdl is None else bool(pdl))

    @classmethod
    def reference(cls) -> "DecodeOps":
        """The same math in torch: the fused step's CPU form, which the tests hold against the model's decoder."""
        from videorope_trt.runtime.kernels import gemv, rope_cache

        return cls(gemv.gemv_reference, rope_cache.project_into_cache_reference, cuda_half_only=False)

    def supports(self, dtype, device) -> bool:
        return not self.cuda_half_only or (device.type == "cuda" and dtype in (torch.float16, torch.bfloat16))


class StaticCacheDecoder:
    def __init__(self, model, batch: int, capacity: int, kernel_lib=None, compile: bool = False, linear=None,
                 triton_decode: bool = False, split_prefill: bool = False, decode_ops: DecodeOps | None = None):
        self.model = model
        text = model.text_model
        self.layers = text.layers
        attn = self.layers[0].self_attn
        self.head_dim = int(model.rope.head_dim)
        self.kv_heads = attn.k_proj.out_features // self.head_dim
        self.q_heads = attn.q_proj.out_features // self.head_dim
        self.fused = fuse_projections(self.layers)
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
        self.linear = linear or F.linear
        fuse = _compiled if compile else (lambda f, dynamic=False: f)
        self.norm, self.swiglu, self.decode_attention = fuse(rms_norm), fuse(swiglu), fuse(decode_attention)
        # prefill pieces come in as many lengths as prompts do: compiled for any length after the second
        self.mlp_block, self.merge_partials = fuse(mlp_block, None), fuse(merge_partials, None)
        inter = self.layers[0].mlp.down_proj.in_features
        self.mlp_rows = max(1, MLP_BYTES // (2 * inter * dtype.itemsize))
        self.flash = False
        if triton_decode and device.type == "cuda" and dtype in (torch.float16, torch.bfloat16):
            from videorope_trt.runtime.kernels import flash_decode

            if flash_decode.available() and flash_decode.supports(self.q_heads, self.kv_heads, self.head_dim,
                                                                  self.rows):
                self.decode_attention, self.flash = flash_decode.flash_decode, True
        # the fused step takes one row, a power-of-two head dim (the attention kernel's tiles), its kernels' dtypes
        # and device, and folds no gate/up bias (Qwen2's MLP has none)
        mlp_bias = any(p.bias is not None for layer in self.layers for p in (layer.mlp.gate_proj, layer.mlp.up_proj))
        fits = batch == 1 and self.head_dim & (self.head_dim - 1) == 0 and not mlp_bias
        self.decode_ops = decode_ops if decode_ops is not None and fits and decode_ops.supports(dtype, device) else None
        # prefill chunks after the first as two cuDNN attentions merged (`prefill_attention`): CUDA, and a cuDNN
        # attention that takes these heads and this dtype (asked once, here, rather than found out mid-prefill)
        self.split_prefill = bool(split_prefill)
        if self.split_prefill:
            from videorope_trt.runtime.kernels.prefill_attention import cudnn_attention_problem

            problem = cudnn_attention_problem(self.q_heads, self.kv_heads, self.head_dim, dtype, device)
            if problem:
                raise ValueError(f"split_prefill: {problem}; run without it")

    def _rotate(self, q, k, positions):
        """q (B, S, Hq, D), k (B, S, KV, D) as the projections give them → rotated, in the same layout."""
        inv_freq, axis_map, attrs = self.rope
        if self.kernel is not None:
            from videorope_trt.plugins import cuda as vr_cuda

            # in place, in the projections' own layout: no transposed copies (views of the fused q/k/v output are
            # contiguous for one token; prefill chunks are copied once)
            q, k = q if q.is_contiguous() else q.contiguous(), k if k.is_contiguous() else k.contiguous()
            return vr_cuda.rotate(q, positions, inv_freq, axis_map, replace(attrs, layout=LAYOUT_BSHD), k=k,
                                  out_q=q, out_k=k, lib=self.kernel)
        bhsd = lambda t: video_rope(t.transpose(1, 2).contiguous(), positions, inv_freq, axis_map, attrs)
        return bhsd(q).transpose(1, 2), bhsd(k).transpose(1, 2)

    def _prefill_attention(self, q, i, mask, keys: int):
        k, v, scale = self.keys[i][:, :, :keys], self.values[i][:, :, :keys], self.head_dim**-0.5
        if self.split_prefill and isinstance(mask, CausalBias):  # no padding: the causal form (a Tensor subclass)
            from videorope_trt.runtime.kernels.prefill_attention import split_causal_attention

            return split_causal_attention(q, k, v, scale, merge=self.merge_partials)
        # grouped-query heads without repeated K/V: flash attention takes fewer K/V heads natively
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=True)

    def _project(self, i, h, positions, cache_position):
        """The rotated query (B, Hq, S, D) of h (B, S, hidden); the rotated keys and the values go into the cache."""
        b, s, _ = h.shape
        qkv_w, qkv_b, _ = self.fused[i]
        qkv = self.linear(h, qkv_w, qkv_b).view(b, s, -1, self.head_dim)  # (B, S, Hq + 2 KV, D)
        q, k, v = qkv.split([self.q_heads, self.kv_heads, self.kv_heads], dim=2)
        q, k = self._rotate(q, k, positions)
        self.keys[i].index_copy_(2, cache_position, k.transpose(1, 2))
        self.values[i].index_copy_(2, cache_position, v.transpose(1, 2))
        return q.transpose(1, 2)

    def _attend(self, i, attn, q, mask, keys, decode: bool):
        """o_proj(attention of q over the first `keys` cache rows) (B, S, hidden); `decode`: `mask` is the decode
        bias over the whole cache, else one of the prefill forms (`_mask`, `_last_query`)."""
        b, _, s, d = q.shape
        if decode:
            out = self.decode_attention(q, self.keys[i], self.values[i], mask, d**-0.5)
        else:
            out = self._prefill_attention(q, i, mask, keys)
        return self.linear(out.transpose(1, 2).reshape(b, s, -1), attn.o_proj.weight, attn.o_proj.bias)

    def _mlp(self, i, layer, x):
        """x + down(SwiGLU(gate_up(rms(x)))): one token through `linear` (the decode products), a prefill chunk
        in the fewest nearly equal pieces of at most `mlp_rows` tokens, each added into x in place (x is the layer's own
        residual sum, no one else's)."""
        ln, m = layer.post_attention_layernorm, layer.mlp
        if x.shape[1] == 1:
            gate, up = self.linear(self.norm(x, ln.weight, ln.variance_epsilon), self.fused[i][2]).chunk(2, dim=-1)
            return x + self.linear(self.swiglu(gate, up), m.down_proj.weight, m.down_proj.bias)
        pieces = -(-x.shape[1] // self.mlp_rows)
        rows = -(-x.shape[1] // pieces)  # pieces within `pieces` tokens of each other: no short remainder
        for r in range(0, x.shape[1], rows):
            piece = x[:, r : r + rows]
            piece += self.mlp_block(piece, ln.weight, ln.variance_epsilon, self.fused[i][2], m.down_proj.weight,
                                    m.down_proj.bias)
        return x

    def _mask(self, attention_mask, cache_position, s: int, keys: int):
        """Decode: an fp32 bias (B, 1, 1, rows) over the whole cache (rows past `keys` blocked); prefill without
        padding: the causal mask aligned to the last key (flash attention's own causal form, no mask tensor);
        prefill with padding: a boolean (B, 1, S, keys) causal + padding mask."""
        if s == 1:
            allowed = torch.zeros((attention_mask.shape[0], self.rows), dtype=torch.bool, device=attention_mask.device)
            allowed[:, :keys] = attention_mask.bool()
            return decode_bias(allowed)
        if bool(attention_mask.all()):  # one host sync per prefill chunk
            return causal_lower_right(s, keys)  # query i sees keys <= keys - s + i = cache_position[i]
        key_idx = torch.arange(keys, device=attention_mask.device)
        causal = key_idx[None, :] <= cache_position[:, None]  # (S, keys)
        return (causal[None] & attention_mask[:, None, :].bool())[:, None]

    def forward(self, inputs_embeds, positions, attention_mask, cache_position, keys: int, logits: bool = True):
        """Append S tokens at `cache_position` (S,) and attend over the first `keys` cache rows.

        attention_mask (B, keys) int64 marks real (1) and padding (0) tokens of the cache rows; returns the
        last token's logits (B, vocab) in fp32, or None with `logits=False` (the cache rows are all that is made).
        """
        s = inputs_embeds.shape[1]
        mask = self._mask(attention_mask, cache_position, s, keys)
        # prefill chunks are slices of the prompt's (A, B, L) positions
        return self.layers_forward(inputs_embeds, positions.contiguous(), mask, cache_position, keys, logits)

    def layers_forward(self, inputs_embeds, positions, mask, cache_position, keys: int, logits: bool = True):
        """The layers and lm_head with the attention mask already built (`_mask`'s forms).

        Nothing reads the last layer's output but the last token's logits: of a prefill chunk, that layer writes
        every token's key and value, then attends and runs its MLP for the last token only, or for none without
        `logits` (and no lm_head then). At Qwen2-VL's 28 layers that is 1/28 of a prefill's attention and MLP."""
        s = inputs_embeds.shape[1]
        if s == 1 and self.decode_ops is not None:
            return self._decode_fused(inputs_embeds.to(self.model.dtype), positions, mask, cache_position)
        norm = self.norm  # compiled per shape: one token, a full prefill chunk, the last chunk
        x = inputs_embeds.to(self.model.dtype)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            ln = layer.input_layernorm
            q = self._project(i, norm(x, ln.weight, ln.variance_epsilon), positions, cache_position)
            if i == last:  # from here on only the last token's output is read, and none without logits
                if not logits:
                    return None
                if s > 1:
                    q, x, mask = q[:, :, -1:], x[:, -1:], _last_query(mask)
            x = x + self._attend(i, layer.self_attn, q, mask, keys, decode=s == 1)
            x = self._mlp(i, layer, x)
        final, head = self.model.text_model.norm, self.model.hf.lm_head
        return self.linear(norm(x[:, -1:], final.weight, final.variance_epsilon), head.weight, head.bias)[:, 0].float()

    def _decode_fused(self, x, positions, bias, cache_position):
        """One token (batch 1) through the layers and lm_head, six kernels per layer (flash_decode is two):

            q = rotate(GEMV(rms(x))), k and v into the cache ─ attention ─ x = x + GEMV(attention)
            h = SwiGLU(GEMV(rms(x))) ─ x = x + GEMV(h)          logits = GEMV(rms(x)) with lm_head
        """
        ops, d = self.decode_ops, self.head_dim
        attend = self.decode_attention
        if ops.pdl and self.flash:  # its first cache tiles are read while the q/k/v kernel ends
            attend = functools.partial(attend, pdl=True, cache_position=cache_position)
        inv_freq, axis_map, attrs = self.rope
        positions = positions.float().contiguous()  # once per step (no copy when it already is), not per layer
        for i, layer in enumerate(self.layers):
            qkv_w, qkv_b, gate_up = self.fused[i]
            ln, o, down = layer.input_layernorm, layer.self_attn.o_proj, layer.mlp.down_proj
            q = ops.project_into_cache(x, qkv_w, qkv_b, ln.weight, ln.variance_epsilon, positions, inv_freq, axis_map,
                                       attrs, self.keys[i], self.values[i], cache_position, self.q_heads, pdl=ops.pdl)
            out = attend(q, self.keys[i], self.values[i], bias, d**-0.5).reshape(x.shape[:-1] + (-1,))
            x = ops.linear(out, o.weight, o.bias, residual=x, pdl=ops.pdl)
            ln = layer.post_attention_layernorm
            h = ops.linear(x, gate_up, None, norm=ln.weight, eps=ln.variance_epsilon, swiglu=True, pdl=ops.pdl)
            x = ops.linear(h, down.weight, down.bias, residual=x, pdl=ops.pdl)
        final, head = self.model.text_model.norm, self.model.hf.lm_head
        logits = ops.linear(x, head.weight, head.bias, norm=final.weight, eps=final.variance_epsilon, pdl=ops.pdl)
        return logits[:, 0].float()


def _last_query(mask):
    """A prefill mask (`StaticCacheDecoder._mask`) cut to the chunk's last query: None for the causal form (the
    last query sees every key), the last row of a boolean one."""
    return None if isinstance(mask, CausalBias) else mask[:, :, -1:]


def decode_bias(allowed):
    """(B, rows) bool → (B, 1, 1, rows) fp32 additive bias: 0 where a key may be attended, a large negative else."""
    return torch.where(allowed, 0.0, torch.finfo(torch.float32).min)[:, None, None]
