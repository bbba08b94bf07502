"""PyTorch backend: our model (`videorope_trt.models`) on CPU or GPU, with a preallocated KV cache.

Two paths over the same weights, chosen by `TorchOptions.reference`:
  * static (the default): `static_decoder.StaticCacheDecoder` writes K/V in place, runs SDPA for prefill chunks and a
    split grouped-query attention for decode, lm_head on the last token only; on CUDA it decodes through the Triton
    kernels (`runtime.kernels`: one-row products, split decode attention, and for batch 1 the fused decode step with
    rotation and cache writes folded in) and replays the decode step as one CUDA graph captured at the cache's first
    `begin_decode`;
  * reference: the cache is one (B, kv_heads, capacity, head_dim) buffer per layer for keys and one for values;
    each forward hands the model's own `decoder` views of the filled part as `past` and writes the new rows of
    `present` back in place: the model's own code path, the parity oracle.

Both run the vision tower as `models.vision_tower.VisionTower` (compiled with `compile`), the blocks the exported
vision graph holds.

Which kernels run is not an option: each was chosen by the benchmarks in bench/ (docs/benchmarks.md). What stays an
option is what a user trades: the dtype, compiling (faster after a slower first generation), the prefill attention
split over cuDNN (`split_prefill`), the CUDA graph, and the CUDA rotary kernel library for prefill.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from videorope_trt.runtime.backends.base import Backend, ModelInfo

#: dtype names → torch dtype names
DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16", "bfloat16": "bfloat16",
          "bf16": "bfloat16"}


@dataclass(frozen=True)
class TorchOptions:
    """What the PyTorch backend runs; `None` means the default for the device."""

    device: str | None = None  # None: cuda when available, else cpu
    dtype: str | None = None  # None: bfloat16 on CUDA, float32 on the CPU
    compile: bool | None = None  # torch.compile the vision blocks and the per-token work; None: on CUDA
    split_prefill: bool = False  # prefill attention as two cuDNN attentions merged by log-sum-exp (CUDA)
    cuda_graph: bool = True  # replay the decode step as one CUDA graph (CUDA)
    reference: bool = False  # the model's own decoder over a plain cache (the parity oracle)
    kernel_lib: str | None = None  # libvideorope_kernel.so: the CUDA rotation for prefill chunks
    variant: str | None = None  # RoPE variant; None: the checkpoint's
    rope_params: dict | None = None  # the variant's parameters (e.g. {"delta": 2.0}); None: the checkpoint's
    checkpoint: str | None = None  # weights to load when the path given is an artifact (else the path itself)

    def __post_init__(self):
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ValueError(f"torch backend: dtype {self.dtype!r} is not one of {sorted(DTYPES)}")

    def resolved(self) -> "TorchOptions":
        """The options with the device's defaults filled in."""
        from dataclasses import replace

        import torch

        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        on_cuda = str(device).startswith("cuda")
        return replace(self, device=device, dtype=DTYPES[self.dtype or ("bfloat16" if on_cuda else "float32")],
                       compile=on_cuda if self.compile is None else self.compile)


#: the artifact's precision → the dtype that runs it in torch
ARTIFACT_DTYPES = {"fp32": "float32", "fp16": "float16"}


def artifact_options(artifact, options: TorchOptions) -> tuple:
    """(checkpoint, options) that run an artifact's model: its checkpoint, its variant and parameters, its float type.
    An option that asks for something else is refused, never silently applied or dropped."""
    from dataclasses import replace

    from videorope_trt.artifact.manifest import check_checkpoint, checkpoint_of, read_manifest, rope_choice

    manifest = read_manifest(artifact)
    variant, params = rope_choice(manifest)
    precision = manifest.get("precision", "fp32")
    where = f"{artifact} was exported with variant {variant} {params} at {precision}"
    if options.variant not in (None, variant) or options.rope_params not in (None, params):
        raise ValueError(f"{where}; the torch backend runs what the artifact records (drop --variant/--rope-params, "
                         "or export again)")
    if precision not in ARTIFACT_DTYPES:
        raise ValueError(f"{where}: the torch backend runs float artifacts ({', '.join(ARTIFACT_DTYPES)}); run this "
                         "one with --backend onnxruntime or tensorrt")
    if options.dtype is not None and DTYPES[options.dtype] != ARTIFACT_DTYPES[precision]:
        raise ValueError(f"{where}: the torch backend runs it in {ARTIFACT_DTYPES[precision]}, not {options.dtype} "
                         "(drop --dtype, or export at another precision)")
    ckpt = check_checkpoint(artifact, manifest, options.checkpoint or checkpoint_of(artifact, manifest))
    return ckpt, replace(options, checkpoint=str(ckpt), variant=variant, rope_params=params,
                         dtype=ARTIFACT_DTYPES[precision])


def info_from_model(model, ckpt_dir) -> ModelInfo:
    """ModelInfo from the checkpoint's config.json and the loaded model's rope settings."""
    from videorope_trt.models.loading import read_config

    return ModelInfo.from_config(read_config(ckpt_dir), variant=model.rope.variant,
                                 position_params=dict(model.rope.position_params), rope_params=dict(model.rope.params))


class TorchBackend(Backend):
    name = "torch"
    Options = TorchOptions

    def __init__(self, model, info: ModelInfo, options: TorchOptions = TorchOptions()):
        options = options.resolved()
        super().__init__(info, options.device)
        self.model, self.options = model, options
        self.dtype = next(model.parameters()).dtype
        on_cuda = str(self.device).startswith("cuda")
        self.static = not options.reference
        self.cuda_graph = options.cuda_graph and on_cuda and self.static
        self.compile = bool(options.compile) and self.static
        if options.split_prefill and not on_cuda:
            raise ValueError("torch backend: split_prefill runs cuDNN's attention, which needs a CUDA device; "
                             f"the device is {self.device}")
        # one per backend: OneRowLinear's per-shape choices outlive every cache allocation
        self.linear = self.decode_ops = None
        if on_cuda and self.static:
            from videorope_trt.runtime.backends.torch.static_decoder import DecodeOps
            from videorope_trt.runtime.kernels import gemv

            if gemv.available():  # the decoder takes the fused step where batch, dtype and shapes allow it
                self.linear, self.decode_ops = gemv.OneRowLinear(), DecodeOps.triton()
        self.keys = self.values = self.fast = self.graphed = None
        from videorope_trt.models.vision_tower import VisionTower

        self.vision_tower = VisionTower(model.visual, compile=self.compile)

    @property
    def num_axes(self) -> int:
        """Rows of the position tensor (A) of this model's rope variant."""
        from videorope_trt.rope import get_variant

        return get_variant(self.info.variant).num_axes

    @classmethod
    def load(cls, path, options: TorchOptions = TorchOptions()):
        """From a checkpoint, or from an artifact directory: then the weights are its checkpoint's (`checkpoint`,
        else the one its manifest records) and the RoPE variant, its parameters and the float type are the
        artifact's, so that every backend answers the same from one artifact."""
        import torch

        from videorope_trt.models import load_model

        if (Path(path) / "manifest.json").is_file():
            path, options = artifact_options(path, options)
        options = options.resolved()
        ckpt_dir = options.checkpoint or path
        model = load_model(ckpt_dir, variant=options.variant, rope_params=options.rope_params,
                           dtype=getattr(torch, options.dtype)).to(options.device).eval()
        return cls(model, info_from_model(model, ckpt_dir), options)

    def _encode_vision_impl(self, pixel_values, grid_thw):
        import torch

        with torch.no_grad():
            return self.vision_tower(pixel_values.to(self.dtype), grid_thw)  # reads the grid on the host

    def _embed_impl(self, input_ids):
        import torch

        with torch.no_grad():
            return self.model.embed(input_ids)

    def _allocate_impl(self, batch, capacity):
        import torch

        self.keys = self.values = self.fast = self.graphed = None  # release the old cache before the new one
        if self.static:
            from videorope_trt.runtime.backends.torch.static_decoder import StaticCacheDecoder

            self.fast = StaticCacheDecoder(self.model, batch, capacity, self.options.kernel_lib, self.compile,
                                           self.linear, triton_decode=True, split_prefill=self.options.split_prefill,
                                           decode_ops=self.decode_ops)
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
