"""The vision graph: patches → merged visual embeddings, with every data-dependent piece computed on the host.

Qwen2-VL's vision tower derives its 2D rotary position ids and its per-frame attention boundaries (`cu_seqlens`)
from `grid_thw` with Python loops and `.tolist()`, which a graph cannot hold. So the host computes them
(`host_inputs`) and the graph takes them as inputs:

    pixel_values (N, C*tp*p*p) ─ patch_embed ─┐
    rotary_pos_ids (N, 2) int64 ─ rotary_pos_emb ─ blocks × depth (attention biased by segment) ─ merger
    segment_ids (N,) int64 ─ bias = 0 where seg[i] == seg[j], else finfo.min ─┘            → (N / merge², hidden)

Attention inside a block must not cross frames. The stock sdpa path splits by `cu_seqlens.tolist()`; its
"flash" path instead hands `cu_seqlens` and every extra keyword to the registered attention function. We register
one attention function under a name containing "flash" (transformers' `AttentionInterface`, the sanctioned
extension point) that ignores the sequence boundaries and runs `sdpa_attention_forward` with the dense bias, and
select it on the vision config only for the duration of a `VisionGraph` forward (`attention_implementation`,
shared with the runtime's batched attention in `videorope_trt.models.vision_attention`, restores the previous
choice on exit). This relies on the branch structure of transformers 5.24's `VisionAttention.forward`; tests pin
it by comparing against the stock tower.

The bias is dense (N × N): encode long videos a few frames per call (N stays a multiple of merge²).
"""

from __future__ import annotations

import torch

from videorope_trt.models import vision_attention

ATTENTION_NAME = "videorope_trt_flash_segment_bias"


def _segment_attention(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0, **kwargs):
    """Attention with the additive segment bias; the flash-path sequence boundaries are not needed with it."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    bias = kwargs.get("segment_bias")
    if bias is None:
        raise ValueError(f"attention {ATTENTION_NAME!r} needs the segment_bias keyword; call it through VisionGraph")
    return sdpa_attention_forward(module, query, key, value, bias, dropout=dropout, scaling=scaling, is_causal=False)


def register_segment_attention() -> str:
    return vision_attention.register_attention(ATTENTION_NAME, _segment_attention)


class VisionGraph(torch.nn.Module):
    """The stock vision tower's modules, driven with host-side position ids and segment ids."""

    input_names = ("pixel_values", "rotary_pos_ids", "segment_ids")
    output_names = ("image_embeds",)

    def __init__(self, visual):
        super().__init__()
        self.visual = visual
        register_segment_attention()

    def forward(self, pixel_values, rotary_pos_ids, segment_ids):
        v = self.visual
        hidden = v.patch_embed(pixel_values.to(v.get_dtype()))
        position_embeddings = v.rotary_pos_emb(hidden, rotary_pos_ids)
        same = segment_ids[:, None] == segment_ids[None, :]
        low = torch.finfo(hidden.dtype).min
        bias = torch.where(same, 0.0, low).to(hidden.dtype)[None, None]  # (1, 1, N, N)
        # `cu_seqlens` is unused by the segment attention; max_seqlen=1 keeps transformers from calling .item()
        boundaries = torch.zeros(2, dtype=torch.int32, device=hidden.device)
        with vision_attention.attention_implementation(v.config, ATTENTION_NAME):
            for blk in v.blocks:
                hidden = blk(hidden, cu_seqlens=boundaries, max_seqlen=1, position_embeddings=position_embeddings,
                             segment_bias=bias)
        return v.merger(hidden)
