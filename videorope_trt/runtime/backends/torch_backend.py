"""PyTorch backend: our model (`videorope_trt.models`) on CPU or GPU, with a preallocated KV cache.

The cache is one (B, kv_heads, capacity, head_dim) buffer per layer for keys and one for values. Each forward
hands the model views of the filled part as `past` and writes the new rows of `present` back in place, so the
cache never reallocates. On a CUDA GPU with the model's layers in the Qwen2 layout, `static_decoder` replaces
this with an in-place cache, SDPA and a CUDA-graphed decode step.
"""

from __future__ import annotations

import json
from pathlib import Path

from videorope_trt.runtime.backends.base import Backend, ModelInfo

DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}


def _variant_name(rope) -> str:
    variant = getattr(rope, "variant", "m_rope")
    return getattr(variant, "name", variant)


def info_from_model(model, ckpt_dir) -> ModelInfo:
    """ModelInfo from the checkpoint's config.json and the loaded model's rope settings."""
    config = json.loads((Path(ckpt_dir) / "config.json").read_text())
    rope = getattr(model, "rope", None)
    params = dict(getattr(rope, "position_params", None) or {})
    return ModelInfo.from_config(config, variant=_variant_name(rope), position_params=params)


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model, info: ModelInfo, device="cpu"):
        super().__init__(info, device)
        self.model = model
        self.dtype = next(model.parameters()).dtype
        self.keys = self.values = None

    @classmethod
    def load(cls, ckpt_dir, *, device="cpu", dtype="float32", variant=None, **_):
        import torch

        from videorope_trt.models import load_model

        if dtype not in DTYPES:
            raise ValueError(f"torch backend: dtype {dtype!r} is not one of {sorted(DTYPES)}")
        model = load_model(ckpt_dir, variant=variant, dtype=getattr(torch, DTYPES[dtype])).to(device).eval()
        return cls(model, info_from_model(model, ckpt_dir), device)

    def _encode_vision_impl(self, pixel_values, grid_thw):
        import torch

        with torch.no_grad():
            return self.model.vision(pixel_values.to(self.dtype), grid_thw)

    def _embed_impl(self, input_ids):
        import torch

        with torch.no_grad():
            return self.model.embed(input_ids)

    def _allocate_impl(self, batch, capacity):
        import torch

        shape = (batch, self.info.num_kv_heads, capacity, self.info.head_dim)
        self.keys = [None] * self.info.num_layers  # release the old cache before the new one
        self.values = [None] * self.info.num_layers
        self.keys = [torch.empty(shape, dtype=self.dtype, device=self.device) for _ in range(self.info.num_layers)]
        self.values = [torch.empty(shape, dtype=self.dtype, device=self.device) for _ in range(self.info.num_layers)]

    def _forward_impl(self, inputs_embeds, positions, attention_mask):
        import torch

        p, s = self.length, inputs_embeds.shape[1]
        past = None if p == 0 else [(k[:, :, :p], v[:, :, :p]) for k, v in zip(self.keys, self.values)]
        with torch.no_grad():
            logits, present = self.model.decoder(inputs_embeds.to(self.dtype), positions, attention_mask, past)
            for (k, v), buf_k, buf_v in zip(present, self.keys, self.values):
                buf_k[:, :, p : p + s] = k[:, :, p : p + s]
                buf_v[:, :, p : p + s] = v[:, :, p : p + s]
        return logits[:, -1].float()

    def synchronize(self):
        import torch

        if str(self.device).startswith("cuda"):
            torch.cuda.synchronize(self.device)
