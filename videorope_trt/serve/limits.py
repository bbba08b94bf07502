"""What one generation may take on this model and device, decided before it is queued.

    limit    = the most context tokens (prompt + video + new tokens): the engines' memory plan (tensorrt), the
               memory plan of this GPU (torch on CUDA), else the model's max_position_embeddings; a configured
               maximum lowers it
    cost     = the request's prompt tokens, its video's tokens from the container's metadata (nothing decoded),
               and its max_tokens
    chunks   = prefill and vision chunk sizes, the plan's for the request's context (as `videorope-trt run`)

A request over the limit is refused with the limit named, never run into an out-of-memory error. The server runs
one generation at a time per model, so each one has the whole plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: the chunk sizes where no plan applies (the CPU, ONNX Runtime), as `run`'s
DEFAULT_PREFILL_CHUNK = 2048
DEFAULT_VISION_CHUNK = 8


@dataclass(frozen=True)
class ContextLimit:
    tokens: int
    source: str  # in words, for the refusal message


def _torch_cuda_plan(session):
    """The memory plan of the GPU a torch backend runs on, or None off CUDA."""
    backend = session.backend
    if backend.name != "torch" or not str(backend.device).startswith("cuda"):
        return None
    import torch

    from videorope_trt.artifact.model_config import read_model_config
    from videorope_trt.build.plan import PlanRequest
    from videorope_trt.build.presets import device_preset

    props = torch.cuda.get_device_properties(backend.device)
    preset = device_preset(props.name, props.total_memory, f"{props.major}.{props.minor}")
    precision = "fp32" if backend.dtype == torch.float32 else "fp16"  # bf16 has fp16's sizes
    return read_model_config(session.source), preset, PlanRequest(precision=precision, runtime="torch")


def session_context_limit(session, configured: int | None = None) -> ContextLimit:
    """The most tokens one request may take on `session`'s backend."""
    backend = session.backend
    plan = getattr(backend, "plan", None)
    if plan is not None:  # engines: built for this context and no more
        limit = ContextLimit(plan.max_context, f"the engines' memory plan (max_context {plan.max_context})")
    elif (cuda := _torch_cuda_plan(session)) is not None:
        from videorope_trt.build.plan import plan_memory

        capacity = plan_memory(*cuda).capacity_context
        limit = ContextLimit(capacity, f"the memory plan of {cuda[1].name} ({capacity} tokens)")
    else:
        n = session.info.max_positions
        limit = ContextLimit(n, f"the model's max_position_embeddings ({n})")
    if configured is not None and configured < limit.tokens:
        limit = ContextLimit(configured, f"the server's --max-context ({configured})")
    return limit


def chunk_sizes(session, context: int, prefill: int | None = None, vision: int | None = None) -> tuple:
    """(prefill chunk, vision chunk): those given, else the memory plan's for this device and context."""
    backend = session.backend
    if backend.max_prefill_chunk:  # engines: their plan bounds the calls
        return prefill or backend.max_prefill_chunk, vision or DEFAULT_VISION_CHUNK
    if prefill is None and (cuda := _torch_cuda_plan(session)) is not None:
        from videorope_trt.build.plan import largest_prefill_chunk

        prefill = largest_prefill_chunk(*cuda, context)
    return prefill or DEFAULT_PREFILL_CHUNK, vision or DEFAULT_VISION_CHUNK


@dataclass(frozen=True)
class VideoCost:
    tokens: int  # LLM tokens of the sampled video
    patches_per_slice: int  # vision-encoder patches of one temporal slice


def video_cost(session, path, fps, max_frames=None, token_budget=None) -> VideoCost:
    """What a video will cost, from its container's metadata and the sampling plan alone (nothing decoded).
    ValueError when the file is no readable video or the sampling options do not apply to it."""
    from videorope_trt.media.video import plan_sampling
    from videorope_trt.media.video_io import probe_video

    cfg = session.processor
    plan = plan_sampling(probe_video(path), cfg, fps=fps, max_frames=max_frames, token_budget=token_budget)
    per_slice = cfg.tokens_per_slice(*plan.size)
    slices = math.ceil(len(plan.indices) / cfg.temporal_patch_size)
    return VideoCost(slices * per_slice, per_slice * cfg.merge_size**2)


def check_fits(session, limit: ContextLimit, prompt_tokens: int, new_tokens: int, cost: VideoCost | None) -> None:
    """ValueError naming the limit when the request cannot run on this model and device."""
    total = prompt_tokens + new_tokens
    if total > limit.tokens:
        video = f" ({cost.tokens} of them the video's)" if cost else ""
        raise ValueError(f"the request needs {total} tokens of context: {prompt_tokens} of prompt{video} and "
                         f"max_tokens {new_tokens}; the limit is {limit.tokens}, {limit.source}. Lower max_tokens, "
                         "fps or max_frames, or send a shorter video")
    most = session.backend.max_vision_patches
    if cost is not None and most and cost.patches_per_slice > most:
        raise ValueError(f"one temporal slice of this video has {cost.patches_per_slice} patches; the engines take "
                         f"at most {most} per call (their memory plan). Send a lower-resolution video")
