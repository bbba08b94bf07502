"""Probes for `bench_runtime.py`: where a decode step's time goes, and device memory per generation phase."""

from __future__ import annotations

import torch

from bench.profiling import device_ms, kernels as profiled_kernels


def _largest_blocks(top: int = 12) -> list:
    """The largest live allocations now (GB) with the innermost frames of our code or torch that made them
    (needs `torch.cuda.memory._record_memory_history` on)."""
    rows = []
    for seg in torch.cuda.memory_snapshot():
        for blk in seg.get("blocks", []):
            if blk.get("state") != "active_allocated":
                continue
            frames = [f"{f['filename'].rsplit('/', 2)[-1]}:{f['line']}:{f['name']}" for f in blk.get("frames", [])
                      if "videorope_trt" in f["filename"] or "bench" in f["filename"] or "triton" in f["filename"]]
            rows.append((blk["size"] / 1e9, frames[:4]))
    rows.sort(key=lambda r: -r[0])
    return [{"gb": round(gb, 4), "where": where} for gb, where in rows[:top]]


def phase_peaks(base):
    """`base` recording the device memory peak of each phase of one generation, in GB: vision (up to the cache
    allocation), the cache, prefill with the decode graph's capture (to the first decode), decode; and what is
    allocated when prefill starts."""
    class PhasePeaks(base):
        phases = {}
        marking = True  # off: no marks, and none of their device syncs (which would stall timed host work)

        def _mark(self, name):
            if self.marking and torch.cuda.is_available():
                torch.cuda.synchronize()
                self.phases[name] = torch.cuda.max_memory_allocated() / 1e9
                torch.cuda.reset_peak_memory_stats()

        def _allocate_impl(self, batch, capacity):
            self._mark("vision")
            super()._allocate_impl(batch, capacity)
            self._mark("allocate")
            if torch.cuda.is_available():
                self.phases["at_prefill_start"] = torch.cuda.memory_allocated() / 1e9
                if getattr(self, "snapshot", False):
                    self.largest_at_prefill_start = _largest_blocks()

        def _begin_decode_impl(self, attention_mask, offset, step):
            super()._begin_decode_impl(attention_mask, offset, step)  # the graph's capture overlaps the prefill
            self._mark("prefill")

        def synchronize(self):
            super().synchronize()
            if "prefill" in self.phases:
                self.phases["decode"] = max(self.phases.get("decode", 0), torch.cuda.max_memory_allocated() / 1e9)

    return PhasePeaks


def decode_graph_profile(graphed, length: int, kernels: bool, replays: int = 50) -> dict:
    """Where a decode step's time goes: the graph's replay time alone (no sampling, no host work), and the
    kernels inside it (count and summed device time, from the profiler): replay − kernel time = launch gaps."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graphed.cache_position.fill_(length)  # every replay at the prompt's end: stays inside the cache
        graphed.graph.replay()
    end.record()
    end.synchronize()
    out = {"graph_step_ms": start.elapsed_time(end) / replays}
    if not kernels:
        return out
    try:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(3):
                graphed.cache_position.fill_(length)
                graphed.graph.replay()
            torch.cuda.synchronize()
        rows = profiled_kernels(prof, skip=("Memset", "Memcpy", "cudaGraph"))
        out["kernels_per_step"] = sum(e.count for e in rows) / 3
        out["kernel_ms_per_step"] = sum(map(device_ms, rows)) / 3
        out["top_kernels"] = [{"name": e.key[:90], "count_per_step": e.count / 3, "ms_per_step": device_ms(e) / 3}
                              for e in rows[:12]]
    except Exception as e:  # the profiler is an extra: its failure leaves the timings
        out["profile_error"] = f"{type(e).__name__}: {e}"[:300]
    return out


#: kernel-name fragments → the kind of work (first match wins; names as CUDA, cuBLAS, cuDNN and Triton give them)
KINDS = (("attention", ("flash", "fmha", "cudnn", "attention", "sdpa")),
         ("products", ("gemm", "nvjet", "xmma", "cutlass", "cublas", "gemv")),
         ("rotation", ("videorope", "rope")),
         ("compiled element-wise", ("triton_",)),
         ("copies", ("copy", "cat", "index", "gather", "fill")))


def kind_of(name: str) -> str:
    low = name.lower()
    return next((kind for kind, parts in KINDS if any(p in low for p in parts)), "other")


def profile_ttft(backend, ids, video, config) -> dict:
    """The time-to-first-token phases once more under the profiler, each on its own: the vision encoder, then
    setup (cache allocation) with the prefill and the decode graph's capture, which overlaps it. Per phase: wall ms,
    summed kernel ms by kind (`KINDS`) and the heaviest kernels. Profiling slows the host side, so the wall times are
    upper bounds."""
    import time

    import numpy as np
    from torch.profiler import ProfilerActivity, profile

    from videorope_trt.runtime.generate import build_positions, decode_inputs, encode_video, left_pad, prefill

    def measured(fn):
        backend.synchronize()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        with profile(activities=activities) as prof:
            start = time.perf_counter()
            result = fn()
            backend.synchronize()
            wall = time.perf_counter() - start
        rows = profiled_kernels(prof, skip=("cudaGraph",))
        by_kind = {}
        for e in rows:
            by_kind[kind_of(e.key)] = by_kind.get(kind_of(e.key), 0.0) + device_ms(e)
        host = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:15]
        return result, {"wall_ms": 1000 * wall, "kernel_ms": sum(by_kind.values()), "by_kind_ms": by_kind,
                        "top": [{"name": e.key[:90], "count": e.count, "ms": device_ms(e)} for e in rows[:15]],
                        "host_top": [{"name": e.key[:90], "count": e.count, "self_cpu_ms": e.self_cpu_time_total / 1000}
                                     for e in host]}

    grid = np.asarray(video.grid_thw, dtype=np.int64).reshape(3)
    visual, out_vision = measured(lambda: encode_video(backend, video.pixel_values, grid, config.vision_chunk))
    tokens, mask = left_pad([ids], backend.info.pad_token_id)
    bp = build_positions(backend.info, [ids], grid)

    def setup_and_prefill(host_ms):
        """`host_ms` gets the host's time to set up, to queue the prefill, to capture the decode graph, and
        then the wait for the device: a wait near 0 means the host, not the device, held the prefill."""
        marks = [time.perf_counter()]
        backend.allocate(1, tokens.shape[1] + config.max_new_tokens)
        positions = torch.as_tensor(np.asarray(bp.positions, np.float32), device=backend.device)
        mask_t = torch.as_tensor(mask, device=backend.device)
        decoding = decode_inputs(backend, bp.rope_deltas, mask_t)
        marks.append(time.perf_counter())
        logits = prefill(backend, tokens, visual, positions, mask_t, config.prefill_chunk)
        marks.append(time.perf_counter())
        backend.begin_decode(*decoding)
        marks.append(time.perf_counter())
        backend.synchronize()
        marks.append(time.perf_counter())
        host_ms.update(zip(("setup", "queue_prefill", "capture", "wait"),
                           (1000 * (b - a) for a, b in zip(marks, marks[1:]))))
        return logits

    unprofiled, marking = {}, getattr(backend, "marking", None)
    backend.marking = False  # `phase_peaks`' marks sync the device: inside begin_decode that would be "capture" time
    try:
        setup_and_prefill(unprofiled)
        _, out_prefill = measured(lambda: setup_and_prefill({}))
    finally:
        backend.marking = marking
    return {"vision": out_vision, "setup_and_prefill": out_prefill, "host_ms_unprofiled": unprofiled}


def ttft_flops(cfg: dict, tokens: int, grid) -> dict:
    """The matrix-product FLOPs that time to first token cannot avoid, from the config alone: the vision tower's
    products (patch embedding, 32 blocks, merger) and its attention within each temporal slice, the decoder's
    products over every prompt token and its causal attention (QKᵀ and PV over the lower triangle). lm_head
    (last token only) and all element-wise work are left out, so this undercounts: a true lower bound."""
    from videorope_trt.artifact.model_config import ModelConfig

    dims, (t, h, w) = ModelConfig.from_config(cfg), grid
    patches, per_slice, q_dim = t * h * w, h * w, dims.num_heads * dims.head_dim
    return {"vision_products": 2 * patches * dims.vision_patch_gemm_params()
            + 2 * patches // dims.spatial_merge_size**2 * dims.vision_merger_params(),
            "vision_attention": 4 * per_slice * per_slice * dims.vision_dim * dims.vision_depth * t,
            "decoder_products": 2 * dims.llm_gemm_params() * tokens,
            "decoder_attention": 4 * (tokens * (tokens + 1) / 2) * q_dim * dims.num_layers}


def matmul_flops_per_s(device, n: int = 8192) -> float:
    """bf16 matrix-product rate of this GPU (one n³ product, median of a few)."""
    from triton.testing import do_bench

    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    return 2 * n**3 / (do_bench(lambda: a @ b, return_mode="median") / 1000)
