"""The decoder graph: one graph for prefill (seq > 1) and decode (seq = 1), KV cache as explicit tensors.

    inputs_embeds (B, S, H), positions (A, B, S) f32, attention_mask (B, P+S) int64, past_key_i / past_value_i
    (B, KV, P, D) for every layer  →  logits (B, S, vocab), present_key_i / present_value_i (B, KV, P+S, D)

The forward is the model's own decoder (models/decoder.py), so the rotation is the `VideoRope` torch op that
the exporter turns into the ONNX form asked for (export/rotary.py). With `last_only` the lm_head runs on the last
position only (logits (B, 1, vocab)): generation needs nothing else, and a 152k vocabulary times a long prefill
is the largest tensor of the graph otherwise.
"""

from __future__ import annotations

import torch

from videorope_trt.artifact.model_config import ModelConfig
from videorope_trt.artifact.specs import decoder_spec


class DecoderGraph(torch.nn.Module):
    def __init__(self, model, last_only: bool = False):
        super().__init__()
        self.model = model
        self.last_only = bool(last_only)

    def forward(self, inputs_embeds, positions, attention_mask, *past):
        from videorope_trt.models.decoder import decoder_forward

        m = self.model
        pairs = [(past[2 * i], past[2 * i + 1]) for i in range(len(past) // 2)]
        if self.last_only:  # model.decoder with the lm_head applied to the last position
            rope_args = (m.inv_freq, m.axis_map, m.rope.attrs, m.rope.head_dim)
            logits, present = decoder_forward(m.text_model, lambda x: m.hf.lm_head(x[:, -1:]), inputs_embeds,
                                              positions.to(torch.float32), attention_mask, pairs, rope_args)
        else:
            logits, present = m.decoder(inputs_embeds, positions, attention_mask, pairs)
        return (logits, *[t for kv in present for t in kv])


def model_config(model) -> ModelConfig:
    """The `ModelConfig` of a loaded `VideoRopeQwen2VL` (its config.json as transformers holds it)."""
    return ModelConfig.from_config(model.config.to_dict(), name=str(getattr(model.config, "_name_or_path", "") or "model"))


def example_inputs(cfg: ModelConfig, num_axes: int, *, batch=2, seq=5, past=3, dtype=torch.float32) -> tuple:
    """Traced inputs. torch.export cannot keep dims of size 0 or 1 symbolic, so every traced dim is >= 2."""
    g = torch.Generator().manual_seed(0)
    embeds = torch.randn(batch, seq, cfg.hidden_size, generator=g, dtype=dtype)
    positions = torch.arange(past, past + seq, dtype=torch.float32).expand(num_axes, batch, seq).contiguous()
    mask = torch.ones(batch, past + seq, dtype=torch.int64)
    kv = [torch.randn(batch, cfg.num_kv_heads, past, cfg.head_dim, generator=g, dtype=dtype)
          for _ in range(2 * cfg.num_layers)]
    return (embeds, positions, mask, *kv)


def dynamic_shapes(cfg: ModelConfig, num_axes: int) -> tuple:
    """torch.export dims from the spec's symbolic names. seq, past and total are independent dims: tied together,
    torch.export would specialise the graph to the traced sizes (docs/architecture.md, Export)."""
    spec = decoder_spec(cfg, num_axes)
    made = {}

    def dim(name):
        if name not in made:
            made[name] = torch.export.Dim(name, min=0 if name == "past" else 1)
        return made[name]

    shapes = []
    for t in spec.inputs:
        shapes.append({i: dim(d) for i, d in enumerate(t.dims) if isinstance(d, str)})
    return (shapes[0], shapes[1], shapes[2], tuple(shapes[3:]))  # the *past argument takes one nested entry
