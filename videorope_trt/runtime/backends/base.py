"""The small interface every backend (PyTorch, ONNX Runtime, TensorRT) implements, and their registry.

A backend owns the weights and the KV cache. Generation (`runtime/generate.py`) only calls:

    encode_vision(pixel_values (N, C*tp*p*p) f32, grid_thw (n, 3) int64) -> (N / merge**2, hidden)
    embed(input_ids (B, S) int64)                                       -> (B, S, hidden)
    allocate(batch, capacity)                                            preallocates the KV cache, length 0
    forward(inputs_embeds (B, S, hidden), positions (A, B, S) f32,
            attention_mask (B, length + S) int64)                        -> last-token logits (B, vocab) f32
    synchronize()                                                        waits for the device (timings)
    begin_decode(attention_mask (B, capacity) int64, offset (A, B, 1) f32, step)
    decode_step(tokens (B,) int64)                                       -> next-token logits (B, vocab) f32

Every backend reads `grid_thw` on the host: pass it there (read back from a GPU, it waits for the GPU's queue).
`forward` and `decode_step` append S (1) tokens to the cache. Decoding keeps everything on the device: the
token at cache position c has positions offset + step * c (`rope.decode_positions`) and sees the cache rows
that `attention_mask` marks up to c; the default `decode_step` is `embed` + `forward`, a backend with a
captured decode step overrides `_decode_step_impl`. The public methods check shapes once here; subclasses implement the
`_impl` methods. Tensors are torch tensors on `backend.device`.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields

from videorope_trt.artifact.model_config import ModelConfig

#: backend name → "module:Class", imported only when chosen.
BACKENDS = {
    "torch": "videorope_trt.runtime.backends.torch.backend:TorchBackend",
    "onnxruntime": "videorope_trt.runtime.backends.ort_backend:OrtBackend",
    "tensorrt": "videorope_trt.runtime.backends.trt_backend:TrtBackend",
}


@dataclass(frozen=True)
class ModelInfo(ModelConfig):
    """What generation needs to know about the model, whichever backend runs it: the checkpoint's config record and
    the RoPE variant the artifact (or the loaded model) runs."""

    variant: str = "m_rope"
    #: keyword arguments of `videorope_trt.rope.batch_positions` (e.g. delta for VideoRoPE's ATS)
    position_params: dict = field(default_factory=dict)
    #: the longest context (prompt + generated tokens) the model is meant for: max_position_embeddings, or what the
    #: RoPE's context-extension scaling extends it to (`rope.scalings.context_limit`); 0: max_positions
    position_limit: int = 0

    @classmethod
    def from_config(cls, config: dict, variant: str = "m_rope", position_params: dict | None = None,
                    name: str = "checkpoint", rope_params: dict | None = None) -> "ModelInfo":
        """From a Qwen2-VL config.json dict (text fields at the top level or under `text_config`); `rope_params`:
        every parameter of the variant (its scaling among them)."""
        from videorope_trt.rope.scalings import context_limit

        base = ModelConfig.from_config(config, name=name)
        return cls(**{f.name: getattr(base, f.name) for f in fields(ModelConfig)}, variant=variant,
                   position_params=dict(position_params or {}),
                   position_limit=context_limit(base.max_positions, rope_params or {}))

    @property
    def context_limit(self) -> int:
        return self.position_limit or self.max_positions


class Backend(ABC):
    """Base class: validates inputs once, tracks the cache length; subclasses do the work in `_impl` methods."""

    name = "base"
    #: largest tokens per forward call and patches per vision call the backend accepts (None: no limit)
    max_prefill_chunk = None
    max_vision_patches = None

    def __init__(self, info: ModelInfo, device="cpu"):
        self.info = info
        self.device = device
        self.batch = 0
        self.capacity = 0
        self.length = 0
        self._decoding = None

    # -- public, validated ------------------------------------------------------------------------------------
    def encode_vision(self, pixel_values, grid_thw):
        if pixel_values.dim() != 2 or grid_thw.dim() != 2 or grid_thw.shape[-1] != 3:
            raise ValueError(
                f"{self.name}: encode_vision expects pixel_values (N, C*tp*p*p) and grid_thw (n, 3); got "
                f"{tuple(pixel_values.shape)} and {tuple(grid_thw.shape)}"
            )
        n = int(grid_thw.prod(-1).sum())
        if n != pixel_values.shape[0]:
            raise ValueError(f"{self.name}: grid_thw {grid_thw.tolist()} holds {n} patches, pixel_values has "
                             f"{pixel_values.shape[0]} rows")
        return self._encode_vision_impl(pixel_values, grid_thw)

    def embed(self, input_ids):
        if input_ids.dim() != 2:
            raise ValueError(f"{self.name}: embed expects input_ids (B, S), got shape {tuple(input_ids.shape)}")
        return self._embed_impl(input_ids)

    def allocate(self, batch: int, capacity: int) -> None:
        if batch < 1 or capacity < 1:
            raise ValueError(f"{self.name}: KV cache needs batch >= 1 and capacity >= 1, got batch={batch}, "
                             f"capacity={capacity}")
        self._allocate_impl(batch, capacity)
        self.batch, self.capacity, self.length = batch, capacity, 0
        self._decoding = None

    def forward(self, inputs_embeds, positions, attention_mask, logits: bool = True):
        """Append S tokens to the cache; the last token's logits (B, vocab) f32, or None with `logits=False` (a
        prefill chunk before the last: a backend may then skip the work only the logits need)."""
        b, s = inputs_embeds.shape[:2]
        if self.capacity == 0:
            raise ValueError(f"{self.name}: call allocate(batch, capacity) before forward")
        if b != self.batch:
            raise ValueError(f"{self.name}: inputs_embeds batch {b} differs from the allocated cache batch "
                             f"{self.batch}")
        if self.length + s > self.capacity:
            raise ValueError(
                f"{self.name}: {self.length} cached + {s} new tokens exceed the KV cache capacity {self.capacity}; "
                "allocate a larger cache (--max-context)"
            )
        if tuple(positions.shape[1:]) != (b, s):
            raise ValueError(f"{self.name}: positions must be (A, {b}, {s}), got {tuple(positions.shape)}")
        if tuple(attention_mask.shape) != (b, self.length + s):
            raise ValueError(
                f"{self.name}: attention_mask must cover cached + new tokens, (B, length + S) = "
                f"({b}, {self.length + s}); got {tuple(attention_mask.shape)}"
            )
        out = self._forward_impl(inputs_embeds, positions, attention_mask, logits)
        self.length += s
        return out if logits else None

    def synchronize(self) -> None:  # noqa: B027  a hook: a backend with no device queue keeps this no-op
        """Wait for queued device work, so that host timings are true."""

    def begin_decode(self, attention_mask, offset, step: float) -> None:
        """Decode from the current cache length on: attention_mask (B, capacity) int64 marks the prompt's real
        tokens and every later one (ones past the prompt); offset (A, B, 1) f32 and `step` (the variant's decode
        step) give the positions of cache position c as offset + step * c. Called once the prefill is queued, before
        its result is waited for: host-side preparation here (a CUDA graph's capture) overlaps the device's work."""
        if tuple(attention_mask.shape) != (self.batch, self.capacity):
            raise ValueError(f"{self.name}: begin_decode's attention_mask must be (B, capacity) = "
                             f"({self.batch}, {self.capacity}); got {tuple(attention_mask.shape)}")
        if offset.dim() != 3 or tuple(offset.shape[1:]) != (self.batch, 1):
            raise ValueError(f"{self.name}: begin_decode's offset must be (A, {self.batch}, 1), got "
                             f"{tuple(offset.shape)}")
        self._decoding = (attention_mask, offset, float(step))
        self._begin_decode_impl(attention_mask, offset, float(step))

    def decode_step(self, tokens):
        """tokens (B,) int64 on the device → next-token logits (B, vocab) f32 (valid until the next step)."""
        if getattr(self, "_decoding", None) is None:
            raise ValueError(f"{self.name}: call begin_decode(attention_mask, offset, step) before decode_step")
        if tuple(tokens.shape) != (self.batch,):
            raise ValueError(f"{self.name}: decode_step expects tokens ({self.batch},), got {tuple(tokens.shape)}")
        if self.length + 1 > self.capacity:
            raise ValueError(f"{self.name}: the KV cache is full ({self.capacity} tokens); allocate a larger cache")
        logits = self._decode_step_impl(tokens)
        return logits

    def _begin_decode_impl(self, attention_mask, offset, step: float) -> None:  # noqa: B027  an optional hook
        """Nothing to prepare for the default `_decode_step_impl`."""

    def _decode_step_impl(self, tokens):
        """embed + forward, positions and mask from `begin_decode`'s tensors (device work only, no sync)."""
        mask, offset, step = self._decoding
        c = self.length
        return self.forward(self.embed(tokens[:, None]), offset + step * c, mask[:, : c + 1])

    # -- implementation ------------------------------------------------------------------------------------------
    @abstractmethod
    def _encode_vision_impl(self, pixel_values, grid_thw): ...

    @abstractmethod
    def _embed_impl(self, input_ids): ...

    @abstractmethod
    def _allocate_impl(self, batch: int, capacity: int) -> None: ...

    @abstractmethod
    def _forward_impl(self, inputs_embeds, positions, attention_mask, logits: bool):
        """The last token's logits; with `logits` False the result is dropped (None may be returned)."""


def encode_by_calls(pixel_values, grid_thw, spatial_merge_size: int, max_patches: int | None, run):
    """Visual embeddings of `grid_thw`'s patches from a vision graph that takes whole temporal slices of one grid per
    call (`artifact.vision_inputs.vision_calls`, at most `max_patches` patches each): `run(patches, slice_pos_ids)`
    encodes one call (slice_pos_ids: numpy (L, 2) int64) and returns its embeddings; they are joined in order."""
    import torch

    from videorope_trt.artifact.vision_inputs import slice_pos_ids, vision_calls

    calls = vision_calls(grid_thw.cpu().numpy(), spatial_merge_size, max_patches)
    outs = [run(pixel_values[c.start:c.stop], slice_pos_ids(c.h, c.w, spatial_merge_size)) for c in calls]
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def backend_class(name: str):
    """The backend class registered under `name` (imported on demand)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {sorted(BACKENDS)}")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_options(options_type, backend: str, given: dict):
    """`options_type(**given)` (a frozen dataclass), or a ValueError naming the options this backend lacks and those
    it takes: an option one backend has and another lacks is refused, never dropped."""
    known = [f.name for f in fields(options_type)]
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ValueError(f"the {backend} backend has no option {', '.join(unknown)}; it takes {', '.join(known)}")
    return options_type(**given)


def default_backend(path, target: str | None = None) -> tuple:
    """(backend name, why) for `path` when none is named: the engines built into an artifact where their TensorRT is
    installed, else ONNX Runtime on the artifact's graphs (both read only the artifact); PyTorch for a checkpoint."""
    from pathlib import Path

    from videorope_trt import trt
    from videorope_trt.artifact.engine_info import NAME, read_engine_info

    path = Path(path)
    if not (path / "manifest.json").is_file():
        return "torch", "a checkpoint directory"
    root = path / "engines"
    built = [root / target] if target else sorted(root.glob("*")) if root.is_dir() else []
    built = [d for d in built if (d / NAME).is_file()]
    if not built:
        return "onnxruntime", "an artifact without engines (`videorope-trt build` makes them)"
    flavour = read_engine_info(built[0]).get("flavour", "tensorrt")
    if not trt.available(flavour):
        return "onnxruntime", f"engines are in {built[0]}, but {flavour} is not installed here"
    if trt.current_gpu() is None:
        return "onnxruntime", f"engines are in {built[0]}, but this machine has no CUDA GPU to run them"
    return "tensorrt", f"the engines in {built[0]}"


def open_backend(name: str, path, **options) -> Backend:
    """Load backend `name` from `path` (a checkpoint for torch, an artifact directory for the others) with its
    options (`Options` of the backend class; an unknown one is an error)."""
    cls = backend_class(name)
    return cls.load(path, make_options(cls.Options, name, options))
