"""Attention functions for Qwen2-VL's vision tower, selected through transformers' `AttentionInterface`.

The tower's attention never crosses a temporal slice: `VisionAttention` gets the slice boundaries as `cu_seqlens`.
Its stock sdpa path splits q/k/v at them (`cu_seqlens.tolist()`) and makes one SDPA call per slice and layer:
127 slices × 32 layers = 4064 small calls for a 32k-token video. Its "flash" path instead hands `cu_seqlens`, the
longest segment and every extra keyword to the registered attention function. So a function registered under a
name containing "flash" (the sanctioned extension point; nothing in transformers is patched) sees the boundaries
and can choose how to honour them:

- `batched_slices_attention`: every slice of one video has h × w patches, so consecutive equal-length segments
  are viewed as a batch (segments, heads, length, head_dim) and attended in ONE SDPA call. When all segments are
  equal (`longest × segments == patches`) this needs no host sync at all.
- the export graph's segment-bias attention (`videorope_trt.export.vision`).

`attention_implementation(config, name)` selects one on the vision config for a `with` block and restores the
previous choice on exit. This relies on the branch structure of `VisionAttention.forward` (transformers 5.17 and
5.24 alike); tests pin it against the stock tower.
"""

from __future__ import annotations

import contextlib
import functools

BATCHED_NAME = "videorope_trt_flash_batched_slices"


@functools.cache  # transformers keeps one process-wide table of attention functions: register each once
def register_attention(name: str, function) -> str:
    """Register `function` under `name` (which must contain "flash", or `VisionAttention` drops `cu_seqlens`)."""
    if "flash" not in name:
        raise ValueError(f"vision attention name {name!r}: expected a name containing 'flash' (only then does "
                         "transformers' VisionAttention pass the slice boundaries to it)")
    from transformers import AttentionInterface

    AttentionInterface.register(name, function)
    return name


@contextlib.contextmanager
def attention_implementation(config, name: str):
    """Select attention `name` on `config` inside the block; the previous choice comes back on exit."""
    previous = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = previous


def equal_runs(cu_seqlens, longest, total: int) -> list[tuple[int, int, int]]:
    """(first patch, segments, length) for each run of consecutive equal-length segments.

    `longest` × segments == `total` means every segment is `longest` long: one run, read without a host sync.
    Otherwise the lengths are read back (as the stock per-slice path does) and grouped.
    """
    segments = cu_seqlens.shape[0] - 1
    if longest is not None and int(longest) * segments == total:
        return [(0, segments, int(longest))]
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
    runs, start = [], 0
    for length in lengths:
        if runs and runs[-1][2] == length:
            runs[-1][1] += 1
        else:
            runs.append([start, 1, length])
        start += length
    return [tuple(r) for r in runs]


def batched_slices_attention(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0,
                             cu_seq_lens_q=None, max_length_q=None, **kwargs):
    """q/k/v (1, heads, N, d) split at `cu_seq_lens_q`: one SDPA per run of equal segments → (1, N, heads, d)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if cu_seq_lens_q is None:
        raise ValueError(f"attention {BATCHED_NAME!r} needs cu_seq_lens_q (the slice boundaries); received none")
    if attention_mask is not None or query.shape[0] != 1:
        raise ValueError(f"attention {BATCHED_NAME!r}: expected one packed sequence (batch 1) and no mask, received "
                         f"batch {query.shape[0]} and a mask {'given' if attention_mask is not None else 'absent'}")
    heads, head_dim = query.shape[1], query.shape[3]
    outs = []
    for start, count, length in equal_runs(cu_seq_lens_q, max_length_q, query.shape[2]):
        # (1, heads, count*length, d) → (count, heads, length, d): a view of the packed layout, no copy
        q, k, v = (t[0, :, start:start + count * length].unflatten(1, (count, length)).transpose(0, 1)
                   for t in (query, key, value))
        out, _ = sdpa_attention_forward(module, q, k, v, None, dropout=dropout, scaling=scaling, is_causal=False)
        outs.append(out.reshape(1, count * length, heads, head_dim))  # out is (count, length, heads, d)
    return (outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)), None


def batched_vision(visual, pixel_values, grid_thw):
    """The stock vision tower with `batched_slices_attention`: merged embeddings (N / merge², hidden)."""
    register_attention(BATCHED_NAME, batched_slices_attention)
    with attention_implementation(visual.config, BATCHED_NAME):
        return visual(pixel_values, grid_thw=grid_thw).pooler_output
