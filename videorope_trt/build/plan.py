"""Memory plan: how much context and how many video frames a Qwen2-VL model holds on a target.

    usable   = memory - reserved (OS, carve-outs on Jetson's unified memory)
    budget   = usable * (1 - headroom)
    fixed    = weights (decoder + vision + embedding table) + CUDA/TensorRT overhead + workspace
               + decoder activations of one prefill chunk + vision activations of one frame chunk
    capacity = (budget - fixed) // per-token bytes        (KV cache + the prompt's embeddings row)

The same plan gives the build its optimization profiles (prefill chunk, context, patches per chunk) and the
runtime its KV cache size (`MemoryPlan.max_context`, `MemoryPlan.kv_cache_bytes`); engine.json stores it.
Estimates assume TensorRT fuses attention (no (heads, S, T) score tensor, nor the vision tower's (slices, heads, L,
L)); `fused_attention=False` counts them.
What differs between runtimes (a separate lm_head copy, logits for a whole prefill chunk) is data: `RUNTIMES`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from videorope_trt.artifact.engine_info import MemoryPlan
from videorope_trt.artifact.model_config import ModelConfig, read_model_config
from videorope_trt.artifact.precisions import FLOAT_BYTES, PRECISIONS
from videorope_trt.build.presets import GiB, Preset, get_preset

#: The prompt and answer text around the video, in tokens.
TEXT_RESERVE = 512
#: Logits leave the decoder as float32 in the worst case (the runtime samples in fp32).
LOGIT_BYTES = 4
CONTEXT_ALIGN = 16


@dataclass(frozen=True)
class RuntimeCosts:
    """What a runtime holds beyond what every runtime holds, as the plan counts it (and as its backend allocates:
    a test holds one against the other)."""

    name: str
    separate_lm_head: bool  # an lm_head copy of its own even when the checkpoint ties it to the embedding table
    runs_graph: bool  # runs the exported decoder graph: its logits are what the export chose (last or all)
    kv_copies: int  # KV caches alive at once
    kv_rows_align: int = 1  # the cache's rows are the capacity rounded up to this
    why: str = ""


RUNTIMES = {
    # Engines are built from the decoder graph, whose lm_head is an initializer of its own; the runtime looks tokens
    # up in the artifact's embedding table. The engine writes each call's K/V rows into the caller's one cache per
    # layer, in place (the VideoRopeCache plugin's aliased outputs).
    "tensorrt": RuntimeCosts("tensorrt", separate_lm_head=True, runs_graph=True, kv_copies=1,
                             why="engine lm_head beside the embedding table; one cache, written in place"),
    # The same decoder graph; ONNX has no in-place update, so a call returns new caches beside the ones it read.
    "onnxruntime": RuntimeCosts("onnxruntime", separate_lm_head=True, runs_graph=True, kv_copies=2,
                                why="graph lm_head beside the embedding table; the caches read and the caches "
                                    "returned"),
    # PyTorch shares a tied lm_head with the embedding, applies it to the last position of a prefill chunk only,
    # and writes K/V in place into one cache whose rows are whole attention splits (static_decoder.SPLIT).
    "torch": RuntimeCosts("torch", separate_lm_head=False, runs_graph=False, kv_copies=1, kv_rows_align=256,
                          why="tied lm_head shared with the embedding; last-position logits; one cache in place"),
}


def _chunk_logits(runtime: RuntimeCosts, request) -> bool:
    return runtime.runs_graph and request.all_logits


def get_runtime(name: str) -> RuntimeCosts:
    if name not in RUNTIMES:
        raise ValueError(f"unknown runtime {name!r}; expected one of {sorted(RUNTIMES)}")
    return RUNTIMES[name]


@dataclass(frozen=True)
class PlanRequest:
    """What the user asks for; None means the preset's default (clipped to what fits)."""

    precision: str = "fp16"
    vision_precision: str | None = None  # default: the float type of `precision` (FP16 for quantized modes)
    max_context: int | None = None
    max_frames: int | None = None
    prefill_chunk: int | None = None
    frames_per_chunk: int | None = None
    frame_size: tuple = (448, 448)  # pixels (height, width), rounded to the 28-pixel merge grid
    batch: int = 1
    headroom: float | None = None
    fused_attention: bool = True
    text_reserve: int = TEXT_RESERVE
    runtime: str = "tensorrt"  # a key of RUNTIMES: what the plan counts for lm_head, logits and KV copies
    all_logits: bool = False  # the decoder graph gives logits for every position (export --all-logits)

    def __post_init__(self):
        # each of these would give a plan that looks fine and is not: a budget above the device's memory, a
        # context of no tokens, profiles with empty ranges
        if self.headroom is not None and not (0 <= self.headroom < 1):
            raise ValueError(f"headroom {self.headroom!r}: expected a fraction of usable memory in [0, 1) "
                             "(0.1 keeps 10 % free)")
        for name in ("max_context", "prefill_chunk", "frames_per_chunk", "batch", "text_reserve"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
                raise ValueError(f"{name.replace('_', '-')} {value!r}: expected a whole number >= 1")
        if self.max_frames is not None and (int(self.max_frames) != self.max_frames or self.max_frames < 0):
            raise ValueError(f"max-frames {self.max_frames!r}: expected a whole number >= 0")


def _vision_precision(req: PlanRequest) -> str:
    if req.vision_precision is not None:
        return req.vision_precision
    return req.precision if req.precision in ("fp32", "bf16") else "fp16"


def _frame_grid(model: ModelConfig, frame_size) -> int:
    """LLM tokens per temporal slice (temporal_patch_size frames) at this frame size, after the 2x2 merge."""
    unit = model.patch_size * model.spatial_merge_size
    h, w = (max(unit, round(s / unit) * unit) for s in frame_size)
    return (h // unit) * (w // unit)


def _weights(model: ModelConfig, precision: str, vision_precision: str, runtime: RuntimeCosts) -> tuple:
    p, vp = PRECISIONS[precision], PRECISIONS[vision_precision]
    own_head = runtime.separate_lm_head or not model.tie_word_embeddings
    head = model.embed_params() * p.act_bytes if own_head else 0  # the lm_head stays in float (never quantized)
    decoder = int(model.llm_gemm_params() * p.weight_bytes + model.llm_other_params() * p.act_bytes + head)
    vision = int(model.vision_gemm_params() * vp.weight_bytes + model.vision_other_params() * vp.act_bytes)
    return decoder, vision, model.embed_params() * p.act_bytes


def decoder_activation_bytes(model: ModelConfig, chunk: int, act: int, batch: int = 1,
                             chunk_logits: bool = True) -> int:
    """One prefill step of `chunk` tokens: hidden states, q/k/v, MLP intermediates, and logits for every position
    of the chunk (`chunk_logits`) or for the last one."""
    per_token = act * (4 * model.hidden_size + 2 * model.kv_dim + 3 * model.intermediate_size)
    logit_rows = chunk if chunk_logits else 1
    return batch * (chunk * per_token + logit_rows * LOGIT_BYTES * model.vocab_size)


#: The vision engine has one profile per range of slice lengths (`build.engine`). TensorRT sizes a profile's tensors
#: for its dims' maxima taken apart: a call's most slices (its most patches over its shortest slice), each of its
#: longest slice. One range from a merge block to a whole chunk would size unfused attention's scores (slices, heads,
#: L, L) for chunk / merge² slices of a chunk's length each, more than any build has. A range [lo, r·lo] holds at
#: most r² · chunk · lo scores per head (`vision_score_bytes` counts them): r = 4 below the planned slice (at most
#: 4 × a chunk of planned slices), r = 2 above it, up to one slice as long as the chunk (2 × that slice's chunk²).
SLICE_RATIOS = (4, 2)  # (below the planned slice, above it)


def slice_ranges(shortest: int, planned: int, longest: int) -> list:
    """[(shortest, longest)] slice lengths of the vision profiles: ranges of SLICE_RATIOS from `planned` down to
    `shortest` (the first of them ends at `planned`) and up to `longest`; neighbours share their end."""
    down, up = [planned], [planned]
    while down[-1] > shortest:
        # rounded up to whole merge blocks (multiples of `shortest`), as every slice is, keeping hi <= r * lo
        down.append(max(shortest, -(-down[-1] // (SLICE_RATIOS[0] * shortest)) * shortest))
    while up[-1] < longest:
        up.append(min(longest, up[-1] * SLICE_RATIOS[1]))
    ranges = [(lo, hi) for hi, lo in zip(down, down[1:])] + list(zip(up, up[1:]))
    return ranges or [(planned, planned)]


def vision_score_bytes(model: ModelConfig, patches: int, per_slice: int, act: int) -> int:
    """Unfused attention's scores and probabilities (slices, heads, L, L) as the vision engine's profiles size them:
    the largest over the ranges of slice lengths of (most slices) × (longest slice)²."""
    shortest = model.spatial_merge_size ** 2
    worst = max((patches // lo) * hi * hi for lo, hi in slice_ranges(shortest, per_slice, patches))
    return 2 * worst * model.vision_heads * act


def vision_activation_bytes(model: ModelConfig, patches: int, per_slice: int, act: int,
                            fused_attention: bool = True) -> int:
    """One vision-encoder call over `patches` patches in temporal slices of `per_slice`: the input and block
    intermediates; unfused attention adds the scores the engine's profiles allow (`vision_score_bytes`; attention
    never crosses a slice, so with fused attention nothing grows with patches²)."""
    e = model.vision_dim
    merged = act * model.hidden_size // model.spatial_merge_size ** 2
    per_patch = 4 * model.patch_dim + act * e * (6 + model.vision_mlp_ratio) + merged
    scores = 0 if fused_attention else vision_score_bytes(model, patches, per_slice, act)
    return patches * per_patch + scores


def _frames_for(context: int, tokens_per_slice: int, tp: int, text_reserve: int) -> int:
    return max(0, (context - text_reserve) // tokens_per_slice) * tp


def _context_for(frames: int, tokens_per_slice: int, tp: int, text_reserve: int) -> int:
    ctx = math.ceil(frames / tp) * tokens_per_slice + text_reserve
    return math.ceil(ctx / CONTEXT_ALIGN) * CONTEXT_ALIGN


def plan_memory(model, target, request: PlanRequest = PlanRequest(), *, _hint: bool = True) -> MemoryPlan:
    """The memory plan of `model` (a ModelConfig, a published name or a checkpoint) on `target` (a preset or its name).

    Raises ValueError when the precision is not offered by the target or the request does not fit; the message
    says what would fit."""
    model = read_model_config(model)
    preset = target if isinstance(target, Preset) else get_preset(target)
    prec = preset.check_precision(request.precision)
    kv_type = prec.float_type  # the graph's float type: caches are graph inputs and outputs
    vprec = _vision_precision(request)
    preset.check_precision(vprec)
    runtime = get_runtime(request.runtime)

    tp = model.temporal_patch_size
    chunk = request.prefill_chunk or preset.prefill_chunk
    frames_per_chunk = request.frames_per_chunk or preset.frames_per_chunk
    if frames_per_chunk % tp:
        raise ValueError(f"frames per chunk must be a multiple of temporal_patch_size={tp}, got {frames_per_chunk}")
    tokens_per_slice = _frame_grid(model, request.frame_size)
    per_slice = tokens_per_slice * model.spatial_merge_size ** 2  # patches
    patches = frames_per_chunk // tp * per_slice

    usable = preset.memory_bytes - preset.reserved_bytes
    headroom = preset.headroom if request.headroom is None else request.headroom
    budget = int(usable * (1 - headroom))
    dec_w, vis_w, emb = _weights(model, request.precision, vprec, runtime)
    act = prec.act_bytes
    dec_act = decoder_activation_bytes(model, chunk, act, request.batch, _chunk_logits(runtime, request))
    vis_act = vision_activation_bytes(model, patches, per_slice, PRECISIONS[vprec].act_bytes, request.fused_attention)
    fixed = dec_w + vis_w + emb + preset.overhead_bytes + preset.workspace_bytes + dec_act + vis_act
    kv_token = model.kv_bytes_per_token(FLOAT_BYTES[kv_type]) * request.batch
    per_token = kv_token * runtime.kv_copies + request.batch * act * model.hidden_size  # + the prompt's embeddings row
    if not request.fused_attention:
        per_token += request.batch * model.num_heads * chunk * act * 2  # scores and probabilities of one layer

    room = budget - fixed
    capacity = _capacity(model, room, per_token, kv_token * runtime.kv_copies, runtime.kv_rows_align)
    capacity_frames = _frames_for(capacity, tokens_per_slice, tp, request.text_reserve)
    where = f"{model.name} {request.precision} (KV {kv_type}) on {preset.name}"
    if capacity < chunk:
        raise ValueError(
            f"{where} does not fit: fixed costs {fixed / GiB:.2f} GiB (weights {(dec_w + vis_w + emb) / GiB:.2f}) "
            f"leave {max(room, 0) / GiB:.2f} GiB of a {budget / GiB:.2f} GiB budget, under one prefill chunk "
            f"of {chunk} tokens" + (f"; {_what_fits(model, preset, request)}" if _hint else ""))

    context, frames = _choose_budget(preset, request, capacity, tokens_per_slice, tp, where, capacity_frames)
    return MemoryPlan(
        model=model.name, target=preset.name, precision=request.precision, kv_precision=kv_type,
        vision_precision=vprec, batch=request.batch, memory_bytes=preset.memory_bytes,
        reserved_bytes=preset.reserved_bytes, headroom_bytes=usable - budget, budget_bytes=budget,
        decoder_weight_bytes=dec_w, vision_weight_bytes=vis_w, embedding_bytes=emb,
        overhead_bytes=preset.overhead_bytes, workspace_bytes=preset.workspace_bytes,
        decoder_activation_bytes=dec_act, vision_activation_bytes=vis_act, kv_bytes_per_token=kv_token,
        per_token_bytes=per_token, capacity_context=capacity, capacity_frames=capacity_frames,
        max_context=context, max_frames=frames, prefill_chunk=min(chunk, context),
        frames_per_chunk=frames_per_chunk, patches_per_chunk=patches, patches_per_slice=per_slice,
        tokens_per_slice=tokens_per_slice,
        frame_size=tuple(request.frame_size), text_reserve=request.text_reserve, runtime=runtime.name,
        kv_copies=runtime.kv_copies, kv_rows_align=runtime.kv_rows_align,
    )


def plan_warnings(plan: MemoryPlan) -> list:
    """What a plan that fits may still not do, one sentence each (the commands print them)."""
    out = []
    if plan.max_frames == 0:
        out.append(f"a context of {plan.max_context} tokens holds no video frame: {plan.text_reserve} tokens are kept "
                   f"for text and one temporal slice of {plan.frame_size[1]}x{plan.frame_size[0]} frames takes "
                   f"{plan.tokens_per_slice}; raise --max-context to at least "
                   f"{plan.text_reserve + plan.tokens_per_slice}, or lower --frame-size, to plan for video")
    return out


def _capacity(model: ModelConfig, room: int, per_token: int, kv_all: int, align: int) -> int:
    """The most context tokens `room` bytes hold, the cache's rows rounded up to `align` as the runtime rounds them."""
    capacity = min(model.max_positions, max(0, room // per_token) // CONTEXT_ALIGN * CONTEXT_ALIGN)
    while capacity and (per_token - kv_all) * capacity + kv_all * -(-capacity // align) * align > room:
        capacity -= CONTEXT_ALIGN
    return capacity


def _choose_budget(preset, request, capacity, tokens_per_slice, tp, where, capacity_frames) -> tuple:
    """The (context, frames) the build and runtime use: the request, else the preset's default, within capacity."""
    fits = f"the most that fits is a context of {capacity} tokens ({capacity_frames} frames)"
    if request.max_context is not None and request.max_context > capacity:
        raise ValueError(f"{where}: a context of {request.max_context} tokens does not fit; {fits}")
    if request.max_frames is not None:
        need = _context_for(request.max_frames, tokens_per_slice, tp, request.text_reserve)
        if need > (request.max_context or capacity):
            raise ValueError(f"{where}: {request.max_frames} frames need a context of {need} tokens "
                             f"({tokens_per_slice} tokens per {tp} frames + {request.text_reserve} text); {fits}")
    context = request.max_context
    if context is None:
        context = min(preset.default_context, capacity)
        if request.max_frames is not None:
            context = max(context, _context_for(request.max_frames, tokens_per_slice, tp, request.text_reserve))
    frames_fit = _frames_for(context, tokens_per_slice, tp, request.text_reserve)
    frames = request.max_frames if request.max_frames is not None else min(preset.default_frames, frames_fit)
    return context, frames


def _what_fits(model: ModelConfig, preset: Preset, request: PlanRequest) -> str:
    """A hint naming the precisions of this target that do fit, or saying none does."""
    from dataclasses import replace

    ok = []
    for name in preset.precisions:
        if name == request.precision:
            continue
        try:
            p = plan_memory(model, preset, replace(request, precision=name, max_context=None, max_frames=None),
                            _hint=False)
        except ValueError:
            continue
        ok.append(f"{name} holds {p.capacity_context} tokens")
    if not ok:
        return "no precision of this target holds the model; use a larger target"
    return "on this target " + ", ".join(ok)


def largest_prefill_chunk(model, target, request: PlanRequest, context: int, align: int = 256) -> int:
    """The most prompt tokens one prefill call can take on `target` with a KV cache of `context` tokens: what the
    budget leaves after every fixed cost but the chunk's activations, divided by one chunk token's activations
    (at most `context`, a multiple of `align` when larger than it). Fewer, larger calls are faster as long as
    they fit (docs/benchmarks.md, Runtime)."""
    from dataclasses import replace

    model = read_model_config(model)
    one = plan_memory(model, target, replace(request, prefill_chunk=align, max_context=None, max_frames=None))
    runtime = get_runtime(request.runtime)
    act = PRECISIONS[request.precision].act_bytes
    chunk_logits = _chunk_logits(runtime, request)
    per_token = decoder_activation_bytes(model, 1, act, request.batch, chunk_logits=True) - (
        0 if chunk_logits else request.batch * LOGIT_BYTES * model.vocab_size)
    room = one.budget_bytes - (one.fixed_bytes - one.decoder_activation_bytes) - one.per_token_bytes * context
    room -= 0 if chunk_logits else request.batch * LOGIT_BYTES * model.vocab_size  # the last token's logits
    chunk = max(0, room // per_token)
    if chunk >= context:
        return context
    if chunk < align:
        raise ValueError(f"{model.name} on {one.target}: a {context}-token context leaves room for prefill calls of "
                         f"{chunk} tokens, under {align}; use a shorter context or a larger device")
    return chunk // align * align
