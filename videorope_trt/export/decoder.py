"""The decoder graph: one graph for prefill (seq > 1) and decode (seq = 1) over caller-owned KV caches.

    inputs_embeds (B, S, H), positions (A, B, S) f32, attention_mask (B, T) int64, write_offset (B,) int32,
    key_cache_i / value_cache_i (B, KV, C, D) for every layer
        →  logits (B, 1, vocab) (or (B, S, vocab)), key_cache_i_out / value_cache_i_out (B, KV, C, D)

Each layer's `VideoRopeCache` op rotates q and k and writes k and v at rows write_offset .. write_offset + S - 1 of
its caches; attention reads the first T rows (T = the mask's length, at least write_offset + S). In TensorRT the
op is the plugin whose cache outputs alias its cache inputs: the engine updates the caller's caches in place and
the build unmarks the cache outputs (another layer reads them), so one cache per layer is all there is. ONNX
Runtime returns the updated caches, which its backend feeds back. The forward is the model's own
(`models.decoder.decoder_forward_cached`); with last-position logits the lm_head runs on the last position only: a
152k vocabulary times a long prefill would otherwise be the graph's largest tensor.
"""

from __future__ import annotations

import torch

from videorope_trt.artifact.model_config import ModelConfig
from videorope_trt.artifact.specs import decoder_spec


class DecoderGraph(torch.nn.Module):
    def __init__(self, model, last_only: bool = True):
        super().__init__()
        self.model = model
        self.last_only = bool(last_only)

    def forward(self, inputs_embeds, positions, attention_mask, write_offset, *caches):
        from videorope_trt.models.decoder import decoder_forward_cached

        m = self.model
        pairs = [(caches[2 * i], caches[2 * i + 1]) for i in range(len(caches) // 2)]
        head = (lambda x: m.hf.lm_head(x[:, -1:])) if self.last_only else m.hf.lm_head
        rope_args = (m.inv_freq, m.axis_map, m.rope.attrs, m.rope.head_dim)
        logits, new = decoder_forward_cached(m.text_model, head, inputs_embeds, positions.to(torch.float32),
                                             attention_mask, write_offset, pairs, rope_args)
        return (logits.float(), *[t for kv in new for t in kv])


def model_config(model) -> ModelConfig:
    """The `ModelConfig` of a loaded `VideoRopeQwen2VL` (its config.json as transformers holds it)."""
    name = str(getattr(model.config, "_name_or_path", "") or "model")
    return ModelConfig.from_config(model.config.to_dict(), name=name)


def example_inputs(cfg: ModelConfig, num_axes: int, *, batch=2, seq=5, past=3, capacity=12,
                   dtype=torch.float32) -> tuple:
    """Traced inputs. torch.export cannot keep dims of size 0 or 1 symbolic, so every traced dim is >= 2, and the
    traced sizes differ from one another (equal sizes would be taken for one dim)."""
    g = torch.Generator().manual_seed(0)
    embeds = torch.randn(batch, seq, cfg.hidden_size, generator=g, dtype=dtype)
    positions = torch.arange(past, past + seq, dtype=torch.float32).expand(num_axes, batch, seq).contiguous()
    mask = torch.ones(batch, past + seq, dtype=torch.int64)
    offset = torch.full((batch,), past, dtype=torch.int32)
    caches = [torch.randn(batch, cfg.num_kv_heads, capacity, cfg.head_dim, generator=g, dtype=dtype)
              for _ in range(2 * cfg.num_layers)]
    return (embeds, positions, mask, offset, *caches)


def dynamic_shapes(cfg: ModelConfig, num_axes: int) -> tuple:
    """torch.export dims from the spec's symbolic names. seq, total and capacity are independent dims: tied
    together, torch.export would specialise the graph to the traced sizes (docs/facts.md, "Decoder export: dynamic
    dimensions")."""
    spec = decoder_spec(cfg, num_axes)
    made = {}

    def dim(name):
        if name not in made:
            made[name] = torch.export.Dim(name, min=1)
        return made[name]

    shapes = []
    for t in spec.inputs:
        shapes.append({i: dim(d) for i, d in enumerate(t.dims) if isinstance(d, str)})
    return (shapes[0], shapes[1], shapes[2], shapes[3], tuple(shapes[4:]))  # *caches takes one nested entry
