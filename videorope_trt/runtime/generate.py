"""Generation over any backend: chunked vision encoding, chunked prefill into a preallocated KV cache, decode.

    video patches ──(chunks of temporal slices)──► backend.encode_vision ──► visual embeddings (shared by prompts)
    prompts ──► token ids (left padded) ──► positions (rope.batch_positions)
            ──► prefill in chunks, each chunk: backend.embed, visual rows at its video tokens ──► first token
    decode: backend.decode_step(token ids) on the device, positions = decode_step × cache_position + rope_deltas
            (as rope.decode_positions), tokens read back every few steps (decode_loop)

Vision memory stays flat because each call sees only `vision_chunk` temporal slices (Qwen2-VL's vision
attention never crosses a temporal slice, so chunking changes nothing numerically).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from videorope_trt.runtime.decode_loop import _no_bar, decode
from videorope_trt.runtime.sampling import Sampler, SamplingConfig


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 128
    #: tokens per prefill call; bounds activation memory during prefill
    prefill_chunk: int = 2048
    #: temporal slices (of temporal_patch_size frames) per vision-encoder call
    vision_chunk: int = 8
    #: KV cache capacity in tokens; None sizes it to the prompt + max_new_tokens
    max_context: int | None = None
    sampling: SamplingConfig = SamplingConfig()
    #: stop at the model's end-of-sequence tokens as well as at `sampling.stop_token_ids`
    stop_at_eos: bool = True
    #: decode steps between host reads of the generated tokens (streaming granularity; each read is one sync)
    sync_every: int = 16
    #: run past the model's position limit (`ModelInfo.context_limit`), where its answers are no longer the ones it
    #: was trained to give; without it, a longer prompt is an error
    allow_long_context: bool = False

    def __post_init__(self):
        for name in ("max_new_tokens", "prefill_chunk", "vision_chunk", "sync_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"generation: {name} must be >= 1, got {getattr(self, name)}")


@dataclass
class GenerationResult:
    tokens: list  # per prompt: generated token ids, stop token excluded
    prompt_length: int  # padded prompt length L (the first generated token has cache position L)
    #: vision_s (the host builds the positions meanwhile), setup_s (cache allocation, positions and mask to the
    #: device), prefill_s (with the backend's decode preparation, which overlaps it), ttft_s, decode_s,
    #: decode_tokens (after the first; a generation that stops early ran one step more than it returns, and
    #: decode_s holds it)
    timings: dict = field(default_factory=dict)


def encode_video(backend, pixel_values, grid_thw, chunk: int = 8, bar=_no_bar):
    """Visual embeddings (t*h*w / merge**2, hidden) of one video, `chunk` temporal slices per call.

    pixel_values (t*h*w, C*tp*p*p) in the processor's order (temporal slice major); grid_thw (3,) in patches.
    At most two chunks of patches are on the device at a time: the one encoded and the next one, copied meanwhile.
    """
    import torch

    t, h, w = (int(v) for v in np.asarray(grid_thw).reshape(3))
    per_slice = h * w
    if pixel_values.shape[0] != t * per_slice:
        raise ValueError(f"encode_video: grid_thw {(t, h, w)} holds {t * per_slice} patches, pixel_values has "
                         f"{pixel_values.shape[0]}")
    merged = per_slice // backend.info.spatial_merge_size**2
    if backend.max_vision_patches:
        if per_slice > backend.max_vision_patches:
            raise ValueError(f"encode_video: one temporal slice has {per_slice} patches; the {backend.name} backend "
                             f"takes at most {backend.max_vision_patches} per call "
                             "(a smaller frame size or a larger plan)")
        chunk = min(chunk, backend.max_vision_patches // per_slice)
    out, progress = None, bar(total=t, desc="vision", unit="slice")
    spans = [(t0, min(t, t0 + chunk)) for t0 in range(0, t, chunk)]
    patches = _on_device(pixel_values, [(t0 * per_slice, t1 * per_slice) for t0, t1 in spans], backend.device)
    for (t0, t1), pv in zip(spans, patches):
        # copied in its own dtype, converted on the device (a host-side conversion of bf16 patches costs more
        # than the vision encoder itself); the grid stays on the host, where every backend reads it (on the
        # device, reading it back would wait for the chunk before)
        emb = backend.encode_vision(pv.to(torch.float32), torch.tensor([[t1 - t0, h, w]]))
        if out is None:
            out = torch.empty((t * merged, emb.shape[-1]), dtype=emb.dtype, device=emb.device)
        out[t0 * merged : t1 * merged] = emb
        progress.update(t1 - t0)
    progress.close()
    return out


def _on_device(array, spans, device):
    """`array[a:b]` on `device` for each (a, b) of `spans`, in order. On CUDA, host rows are copied from page-locked
    memory on a stream of their own, the next span's while the caller's work on the current one runs (copies from
    pageable memory held up the vision encoder: docs/benchmark-log.md, "32k: time to first token without host
    stalls", run 1); rows already on a device are used as they are."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        for a, b in spans:
            yield torch.as_tensor(array[a:b]).to(device)
        return
    copier, compute = torch.cuda.Stream(device), torch.cuda.current_stream(device)

    def queue(a, b):
        rows = torch.as_tensor(array[a:b])
        if rows.device.type != "cpu":
            return rows.to(device), False
        pinned = rows.pin_memory()
        with torch.cuda.stream(copier):
            return pinned.to(device, non_blocking=True), True

    ahead = queue(*spans[0]) if spans else None
    for i in range(len(spans)):
        (current, copied), ahead = ahead, None
        if copied:
            compute.wait_stream(copier)
            current.record_stream(compute)  # made on the copier's stream, used (and freed) on the caller's
        yield current
        # the caller has queued its work on `current`: the next copy runs beside it, and only these two spans are
        # on the device (the caller lets go of `current` when it takes the next)
        if i + 1 < len(spans):
            ahead = queue(*spans[i + 1])


def left_pad(rows, pad_id: int):
    """Token-id lists → (B, L) int64 ids and (B, L) int64 mask, left padded to the longest row."""
    longest = max(len(r) for r in rows)
    ids = np.full((len(rows), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), longest), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, longest - len(r) :] = r
        mask[i, longest - len(r) :] = 1
    return ids, mask


def build_positions(info, rows, video_grid_thw=None, fps=None):
    """Per-row segments from the token ids, then left-padded batch positions (rope.batch_positions).

    `fps`: the video's sampling rate, for variants with absolute time; None keeps the model's recorded value.
    """
    from videorope_trt import rope

    grid = None if video_grid_thw is None else np.asarray(video_grid_thw, dtype=np.int64).reshape(-1, 3)
    segments = []
    for r in rows:
        ids = np.asarray(r, dtype=np.int64)
        has_video = grid is not None and bool((ids == info.video_token_id).any())
        segments.append(
            rope.segments_from_tokens(
                ids,
                video_grid_thw=grid if has_video else None,
                image_token_id=info.image_token_id,
                video_token_id=info.video_token_id,
                spatial_merge_size=info.spatial_merge_size,
            )
        )
    params = info.position_params | ({} if fps is None else {"fps": fps})
    return rope.batch_positions(info.variant, segments, **params)


def video_rows(backend, ids, visual):
    """(B, L) int64 on the device: for each token the visual row it takes, -1 for a token that is no video token.

    The k-th video token of a row takes visual row k: every prompt shares the one video, so a row holds either
    no video tokens or exactly as many as the video encodes to. Computed once (one host read, for that check);
    `chunk_embeds` then gathers rows with no further sync.
    """
    import torch

    is_video = ids == backend.info.video_token_id
    counts = is_video.sum(-1).tolist()
    for b, n in enumerate(counts):
        if n not in (0, visual.shape[0]):
            raise ValueError(f"prompt {b} has {n} video tokens; the video encodes to {visual.shape[0]}")
    return torch.where(is_video, is_video.cumsum(-1) - 1, -1)


def chunk_embeds(backend, ids, s0: int, s1: int, visual=None, rows=None):
    """Embeddings (B, s1 - s0, hidden) of tokens s0..s1 of the (B, L) device ids, video tokens replaced by their
    visual rows (`rows` from `video_rows`); exactly the rows s0..s1 of the whole prompt's embeddings."""
    import torch

    embeds = backend.embed(ids[:, s0:s1])
    if visual is None:
        return embeds
    index = rows[:, s0:s1]
    # torch.where rather than a boolean-mask assignment, which would read the mask back to the host every chunk
    picked = visual.index_select(0, index.clamp(min=0).reshape(-1)).view(*index.shape, -1).to(embeds.dtype)
    return torch.where((index >= 0)[..., None], picked, embeds)


def prefill(backend, ids, visual, positions, mask, chunk: int, bar=_no_bar):
    """Run the prompt through the backend `chunk` tokens at a time; last-token logits (B, vocab).

    ids (B, L) token ids (host or device); visual (N, hidden) the shared video's embeddings or None. Each chunk
    is embedded just before its forward call, so only the visual embeddings and one chunk's embeddings are alive,
    never the whole prompt's.
    """
    import torch

    ids = torch.as_tensor(ids, device=backend.device)
    rows = None if visual is None else video_rows(backend, ids, visual)
    length = ids.shape[1]
    chunk = min(chunk, backend.max_prefill_chunk or chunk)
    progress, logits = bar(total=length, desc="prefill", unit="tok"), None
    for s0 in range(0, length, chunk):
        s1 = min(length, s0 + chunk)
        embeds = chunk_embeds(backend, ids, s0, s1, visual, rows)
        # only the last chunk's logits are read: the others only fill the cache
        logits = backend.forward(embeds, positions[:, :, s0:s1], mask[:, :s1], logits=s1 == length)
        embeds = None  # let the allocator reuse this chunk's buffer for the next one
        progress.update(s1 - s0)
    progress.close()
    return logits


def decode_inputs(backend, rope_deltas, mask) -> tuple:
    """`backend.begin_decode`'s arguments after a prefill of the (B, L) `mask`: every later token real, positions
    continuing per sample from its `rope_deltas` (as rope.decode_positions). Made before the prefill is queued:
    the host-to-device copy in here would otherwise wait for the prefill to finish."""
    import torch

    from videorope_trt import rope

    batch, length = mask.shape
    full = torch.ones((batch, backend.capacity), dtype=mask.dtype, device=mask.device)  # generated tokens are real
    full[:, :length] = mask
    variant = rope.get_variant(backend.info.variant)
    deltas = torch.as_tensor(np.asarray(rope_deltas, np.float32).reshape(1, batch, 1), device=backend.device)
    return full, deltas.expand(variant.num_axes, batch, 1).contiguous(), variant.decode_step


def check_context(info, prompt_tokens: int, capacity: int, config: GenerationConfig) -> None:
    """Refuse a generation longer than the model's position limit (before any work), unless
    `config.allow_long_context`: past it the model answers, but not as it was trained to."""
    limit, need = info.context_limit, prompt_tokens + config.max_new_tokens
    if config.allow_long_context or max(need, capacity) <= limit:
        return
    extended = "" if limit == info.max_positions else f", as the RoPE's scaling extends its {info.max_positions}"
    what = (f"the prompt ({prompt_tokens} tokens) and max_new_tokens ({config.max_new_tokens}) need {need} positions"
            if need > limit else f"a KV cache of {capacity} tokens (--max-context) reaches past them")
    raise ValueError(f"generation: {what}; the model holds {limit} (max_position_embeddings{extended}). Shorten the "
                     "video (--max-frames, --fps, --token-budget) or the answer (--max-new-tokens), or run past the "
                     "limit anyway with --allow-long-context (answers there are not what the model was trained for)")


def generate(backend, rows, video=None, config: GenerationConfig = GenerationConfig(), on_token=None, bar=_no_bar):
    """Answer every prompt in `rows` (token-id lists; video tokens already expanded) about one shared video.

    `video` carries `pixel_values` and `grid_thw` (as `runtime.video.load_video` returns) or is None.
    """
    import torch

    clock, timings = time.perf_counter(), {}
    ids, mask = left_pad(rows, backend.info.pad_token_id)
    capacity = config.max_context or ids.shape[1] + config.max_new_tokens
    if capacity < ids.shape[1] + config.max_new_tokens:
        raise ValueError(
            f"generation: the prompt ({ids.shape[1]} tokens) plus max_new_tokens ({config.max_new_tokens}) "
            f"exceeds the KV cache capacity {capacity}; raise --max-context or shorten the video"
        )
    check_context(backend.info, ids.shape[1], capacity, config)
    visual = grid = None
    if video is not None:
        grid = np.asarray(video.grid_thw, dtype=np.int64).reshape(3)
        visual = encode_video(backend, video.pixel_values, grid, config.vision_chunk, bar)
    # the positions are host work: built while the device encodes the video's last chunk
    bp = build_positions(backend.info, rows, grid, getattr(video, "fps", None))
    if not np.array_equal(np.asarray(bp.attention_mask), mask):
        raise ValueError("generation: rope.batch_positions padded the prompts differently from the token ids")
    backend.synchronize()
    timings["vision_s"] = time.perf_counter() - clock

    backend.allocate(len(rows), capacity)
    mask_t = torch.as_tensor(mask, device=backend.device)
    positions = torch.as_tensor(np.asarray(bp.positions, np.float32), device=backend.device)
    backend.synchronize()
    timings["setup_s"] = time.perf_counter() - clock - timings["vision_s"]
    decoding = decode_inputs(backend, np.asarray(bp.rope_deltas), mask_t)
    logits = prefill(backend, ids, visual, positions, mask_t, config.prefill_chunk, bar)
    visual = None  # prefill was its last use: decode needs only the cache
    backend.begin_decode(*decoding)  # while the device still runs the prefill
    backend.synchronize()
    timings["prefill_s"] = time.perf_counter() - clock - timings["vision_s"] - timings["setup_s"]

    first = {}

    def _timed(step, tok, active):
        if step == 0:
            first["t"] = time.perf_counter() - clock
        first["steps"] = step + 1
        if on_token is not None:
            on_token(step, tok, active)

    stops = set(config.sampling.stop_token_ids) | (set(backend.info.eos_token_ids) if config.stop_at_eos else set())
    sampler = Sampler(replace(config.sampling, stop_token_ids=tuple(sorted(stops))), device=logits.device)
    tokens = decode(backend, sampler, logits, config.max_new_tokens, _timed, bar, config.sync_every)
    backend.synchronize()
    total = time.perf_counter() - clock
    timings.update(ttft_s=first["t"], decode_s=total - first["t"], decode_tokens=first["steps"] - 1)
    return GenerationResult(tokens=tokens, prompt_length=int(ids.shape[1]), timings=timings)
