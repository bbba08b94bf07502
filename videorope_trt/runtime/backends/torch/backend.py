"""PyTorch backend: our model (`videorope_trt.models`) on CPU or GPU, with a preallocated KV cache.

Two paths over the same weights:
  * reference (`static=False`): the cache is one (B, kv_heads, capacity, head_dim) buffer per layer for keys and
    one for values; each forward hands the model's own `decoder` views of the filled part as `past` and writes the
    new rows of `present` back in place, so the cache never reallocates;
  * static (`static=True`, the default on CUDA): `static_cache.StaticCacheDecoder` writes K/V in place, runs
    SDPA for prefill chunks and a block-split grouped-query attention for decode, lm_head on the last token only,
    uses the fused rotary kernel when a kernel library is given (`kernel_lib` or $VIDEOROPE_KERNEL_LIB), on CUDA
    replays `decode_step` (token ids in, logits out) as one CUDA graph captured at the cache's first
    `begin_decode` (`forward` with one token stays eager), decodes layer by layer through `gemv.OneRowLinear`
    (`gemv=True`, CUDA + Triton) and `flash_decode` (`triton_decode=True`, CUDA + Triton), for batch 1 runs the
    fused decode step (`fused_decode=True`, CUDA + Triton, fp16/bf16: norms, SwiGLU, residual adds, rotation and
    cache writes folded into six kernels per layer, its own Triton GEMV whatever `gemv` says, programmatic dependent launches
    where the GPU has them, `pdl`), can split prefill attention over cuDNN (`split_prefill=True`,
    `prefill_attention.py`: off by default; it measured faster at 7B with 1024-token chunks and slower at 2B with
    4096-token ones), and with `compile=True` fuses the decode step's element-wise work with torch.compile.
The vision tower runs as `models.vision_fast.FusedVision` on CUDA (`fused_vision`; compiled with `compile=True`),
else as the model's own vision call.
"""

from __future__ import annotations

import os

from videorope_trt.runtime.backends.base import Backend, ModelInfo

DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}


def _variant_name(rope) -> str:
    variant = getattr(rope, "variant", "m_rope")
    return getattr(variant, "name", variant)


def info_from_model(model, ckpt_dir) -> ModelInfo:
    """ModelInfo from the checkpoint's config.json and the loaded model's rope settings."""
    from videorope_trt.models.loading import read_config

    config = read_config(ckpt_dir)
    rope = getattr(model, "rope", None)
    params = dict(getattr(rope, "position_params", None) or {})
    return ModelInfo.from_config(config, variant=_variant_name(rope), position_params=params)


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model, info: ModelInfo, device="cpu", *, static=None, cuda_graph=True, kernel_lib=None,
                 compile=False, gemv=True, fused_vision=None, triton_decode=True, split_prefill=False,
                 fused_decode=True, pdl=None):
        super().__init__(info, device)
        self.model = model
        self.dtype = next(model.parameters()).dtype
        on_cuda = str(device).startswith("cuda")
        self.static = on_cuda if static is None else bool(static)
        self.cuda_graph = bool(cuda_graph) and on_cuda and self.static
        self.kernel_lib = kernel_lib or os.environ.get("VIDEOROPE_KERNEL_LIB")
        self.compile = bool(compile) and self.static
        self.triton_decode, self.split_prefill = bool(triton_decode), bool(split_prefill)
        # one per backend: OneRowLinear's per-shape choices outlive every cache allocation
        self.linear = self.decode_ops = None
        if on_cuda and self.static:
            from videorope_trt.runtime.kernels import gemv as gemv_module
            from videorope_trt.runtime.backends.torch.static_decoder import DecodeOps

            if gemv_module.available():  # the decoder takes the fused step where batch, dtype and shapes allow it
                self.linear = gemv_module.OneRowLinear() if gemv else None
                self.decode_ops = DecodeOps.triton(pdl) if fused_decode else None
        self.keys = self.values = self.fast = self.graphed = None
        self.fused_vision = None
        if (on_cuda if fused_vision is None else fused_vision):
            from videorope_trt.models.vision_fast import FusedVision

            if FusedVision.supports(model.visual) is None:
                self.fused_vision = FusedVision(model.visual, compile=self.compile)

    @property
    def num_axes(self) -> int:
        """Rows of the position tensor (A) of this model's rope variant."""
        from videorope_trt.rope import get_variant

        return get_variant(self.info.variant).num_axes

    @classmethod
    def load(cls, ckpt_dir, *, device="cpu", dtype="float32", variant=None, static=None, cuda_graph=True,
             kernel_lib=None, compile=False, **_):
        import torch

        from videorope_trt.models import load_model

        if dtype not in DTYPES:
            raise ValueError(f"torch backend: dtype {dtype!r} is not one of {sorted(DTYPES)}")
        model = load_model(ckpt_dir, variant=variant, dtype=getattr(torch, DTYPES[dtype])).to(device).eval()
        return cls(model, info_from_model(model, ckpt_dir), device, static=static, cuda_graph=cuda_graph,
                   kernel_lib=kernel_lib, compile=compile)

    def _encode_vision_impl(self, pixel_values, grid_thw):
        import torch

        with torch.no_grad():
            if self.fused_vision is not None and grid_thw.shape[0] == 1:  # reads the grid on the host
                return self.fused_vision(pixel_values.to(self.dtype), grid_thw)
            # the stock tower builds its slice boundaries and rotary positions on the grid's device
            return self.model.vision(pixel_values.to(self.dtype), grid_thw.to(pixel_values.device))

    def _embed_impl(self, input_ids):
        import torch

        with torch.no_grad():
            return self.model.embed(input_ids)

    def _allocate_impl(self, batch, capacity):
        import torch

        self.keys = self.values = self.fast = self.graphed = None  # release the old cache before the new one
        if self.static:
            from videorope_trt.runtime.backends.torch.static_decoder import StaticCacheDecoder

            self.fast = StaticCacheDecoder(self.model, batch, capacity, self.kernel_lib, self.compile, self.linear,
                                           self.triton_decode, self.split_prefill, self.decode_ops)
            return
        shape = (batch, self.info.num_kv_heads, capacity, self.info.head_dim)
        self.keys = [torch.empty(shape, dtype=self.dtype, device=self.device) for _ in range(self.info.num_layers)]
        self.values = [torch.empty(shape, dtype=self.dtype, device=self.device) for _ in range(self.info.num_layers)]

    def _forward_impl(self, inputs_embeds, positions, attention_mask, logits=True):
        import torch

        if self.static:
            with torch.no_grad():
                return self._static_forward(inputs_embeds, positions, attention_mask, logits)
        p, s = self.length, inputs_embeds.shape[1]
        past = None if p == 0 else [(k[:, :, :p], v[:, :, :p]) for k, v in zip(self.keys, self.values)]
        with torch.no_grad():
            logits, present = self.model.decoder(inputs_embeds.to(self.dtype), positions, attention_mask, past)
            for (k, v), buf_k, buf_v in zip(present, self.keys, self.values):
                buf_k[:, :, p : p + s] = k[:, :, p : p + s]
                buf_v[:, :, p : p + s] = v[:, :, p : p + s]
        return logits[:, -1].float()

    def _static_forward(self, inputs_embeds, positions, attention_mask, logits):
        import torch

        keys = self.length + inputs_embeds.shape[1]
        cache_position = torch.arange(self.length, keys, device=inputs_embeds.device)
        return self.fast.forward(inputs_embeds, positions, attention_mask, cache_position, keys, logits)

    def _begin_decode_impl(self, attention_mask, offset, step):
        import torch

        # captured once per cache, here rather than at `allocate`: the prefill is queued by now, so the capture's host
        # work runs while the device works through it (the first token waits for its one warm-up step on the device);
        # not with the cache full (no step follows, and the warm-up writes the last row)
        if self.cuda_graph and self.graphed is None and self.length < self.capacity:
            from videorope_trt.runtime.backends.torch.decode_graph import GraphedDecode

            with torch.no_grad():
                self.graphed = GraphedDecode(self.fast, self.batch, self.num_axes)
        if self.graphed is not None:
            self.graphed.begin(attention_mask, offset, step, self.length)

    def _decode_step_impl(self, tokens):
        if self.graphed is None:
            return super()._decode_step_impl(tokens)
        logits = self.graphed(tokens)  # the graph advances its own cache position
        self.length += 1
        return logits

    def synchronize(self):
        import torch

        if str(self.device).startswith("cuda"):
            torch.cuda.synchronize(self.device)
