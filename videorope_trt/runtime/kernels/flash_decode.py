"""One query token against the whole KV cache, split over the cache rows (flash-decoding), in Triton.

The torch form (`static_decoder.decode_attention`) is two batched matrix products and a softmax between them: five
kernels per layer, and the (heads, rows) scores written and read back three times. Here a first kernel gives each
program one KV head of one sample and `SPLIT_ROWS` cache rows: all G query heads of that KV head are one tile
(padded to 16 rows for the tensor cores), scores stay in fp32 registers, the softmax is online, and it leaves
a partial output with its running max and sum. A second kernel combines the partials of each query head in one
pass (a program per head and 32 channels, faster than the first form, a program per head and two passes:
docs/benchmark-log.md, "32k with the fused decode step", run 3; its programs take up to 256 splits per step, every
split of a 64k cache in one).
The cache is read once, by programs spread over every SM.

In the decode step both kernels are programmatic dependent launches behind the q/k/v kernel, and the first
kernel reads its first tile of cache rows before waiting for that kernel (`cache_position`): the cache rows and
the mask were written before the kernel before it (itself a dependent launch, started only once they were),
except this token's row, so only the tile that holds this token's row is read again after the wait. How long
the step takes then hangs on how much of each split comes in early and how many programs are on the GPU at the
launch, which the autotuner, timing the kernel alone, does not see. Chosen by bench/bench_flash_decode.py in the
step (docs/benchmarks.md, "Decode step and its attention"): grids of about two programs per SM do best, so the step
cuts the cache into the longest splits that give that many (`step_split`): 256 rows at 32k (2B: 258 programs, two
128-row tiles in two stages, so half of each split comes in early; 7B: 516, the autotuner's pick), and at shorter
caches one-tile splits of 128 or 64 rows read whole before the wait (2B at 8k: 264 programs of 64 rows).

Masking follows `static_decoder.decode_bias`: the bias is 0 where a row may be attended and a large negative
number elsewhere; such rows get probability exactly 0, and a split with no allowed row contributes nothing. A
query with no allowed row anywhere gets 0 (the torch form's softmax would average every row).
Triton is imported only here, when first used.
"""

from __future__ import annotations

import functools

import torch

from videorope_trt.runtime.kernels.gemv import launch

#: cache rows per program of the first kernel (the cache's row count is a multiple of it: static_decoder.SPLIT)
SPLIT_ROWS = 256


def available() -> bool:
    from videorope_trt.runtime.kernels.gemv import available as triton_and_cuda

    return triton_and_cuda()


def supports(q_heads: int, kv_heads: int, head_dim: int, rows: int) -> bool:
    """The shapes the kernels take: head dim 64 or 128, at most 16 query heads per KV head, rows in whole splits."""
    return head_dim in (64, 128) and q_heads // kv_heads <= 16 and rows % SPLIT_ROWS == 0


def usable(q, keys) -> bool:
    return (q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and q.shape[2] == 1 and keys.is_contiguous()
            and supports(q.shape[1], keys.shape[1], q.shape[-1], keys.shape[2]))


#: (rows per step, warps, pipeline stages) the partial kernel's autotuner tries; the first is the form measured
#: before tuning; configs that do not fit the GPU's shared memory are skipped by the autotuner
PARTIAL_CONFIGS = ((64, 4, 3), (128, 4, 3), (128, 8, 3), (64, 4, 4), (32, 4, 4), (128, 8, 2), (64, 8, 3))


@functools.cache
def _partial_kernel(configs=PARTIAL_CONFIGS):
    import triton
    import triton.language as tl

    configs = [triton.Config({"BLOCK_R": r}, num_warps=w, num_stages=st) for r, w, st in configs]

    @triton.jit
    def attend_tile(q, k, v, allowed, m, den, acc, scale):
        """The online softmax over one tile of cache rows: (running max, denominator, output) updated."""
        s = tl.dot(q, tl.trans(k)) * scale
        s = tl.where(allowed[None, :], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=1))
        safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with nothing allowed yet
        p = tl.exp(s - safe[:, None])
        alpha = tl.exp(m - safe)
        den = den * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        return m_new, den, acc

    @triton.autotune(configs=configs, key=["rows", "G", "D", "PDL", "PREFETCH"])
    @triton.jit
    def partial_kernel(q_ptr, k_ptr, v_ptr, bias_ptr, cpos_ptr, acc_ptr, ml_ptr, scale, rows, kv_heads, n_splits,
                       G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr, BLOCK_R: tl.constexpr,
                       SPLIT: tl.constexpr, PDL: tl.constexpr, PREFETCH: tl.constexpr):
        split, bh = tl.program_id(0), tl.program_id(1)  # bh = b * kv_heads + h
        b = bh // kv_heads
        g, d = tl.arange(0, GP), tl.arange(0, D)
        start = split * SPLIT
        r = start + tl.arange(0, BLOCK_R)
        first_k = k_ptr + (bh * rows + r)[:, None].to(tl.int64) * D + d[None, :]
        first_v = v_ptr + (bh * rows + r)[:, None].to(tl.int64) * D + d[None, :]
        if PREFETCH:  # see the module's doc; past L1, not kept coherent with other SMs' writes (the reload below)
            k, v = tl.load(first_k, cache_modifier=".cg"), tl.load(first_v, cache_modifier=".cg")
        if PDL:  # the query and this token's cache row come from the kernel before
            tl.extra.cuda.gdc_wait()
            tl.extra.cuda.gdc_launch_dependents()
        if PREFETCH:
            pos = tl.load(cpos_ptr)
            if (pos >= start) & (pos < start + BLOCK_R):
                k, v = tl.load(first_k, cache_modifier=".cg"), tl.load(first_v, cache_modifier=".cg")
        else:
            k, v = tl.load(first_k), tl.load(first_v)
        q = tl.load(q_ptr + (bh * G + g)[:, None] * D + d[None, :], mask=(g < G)[:, None], other=0.0)
        m = tl.full((GP,), float("-inf"), tl.float32)
        den = tl.zeros((GP,), tl.float32)
        acc = tl.zeros((GP, D), tl.float32)
        m, den, acc = attend_tile(q, k, v, tl.load(bias_ptr + b * rows + r) > -1e30, m, den, acc, scale)
        for r0 in range(start + BLOCK_R, start + SPLIT, BLOCK_R):
            r = r0 + tl.arange(0, BLOCK_R)
            k = tl.load(k_ptr + (bh * rows + r)[:, None].to(tl.int64) * D + d[None, :])
            v = tl.load(v_ptr + (bh * rows + r)[:, None].to(tl.int64) * D + d[None, :])
            m, den, acc = attend_tile(q, k, v, tl.load(bias_ptr + b * rows + r) > -1e30, m, den, acc, scale)
        base = (bh * n_splits + split) * GP
        real = g < G  # the tile's padding rows are never read back
        tl.store(acc_ptr + (base + g)[:, None] * D + d[None, :], acc, mask=real[:, None])
        tl.store(ml_ptr + (base + g) * 2, m, mask=real)
        tl.store(ml_ptr + (base + g) * 2 + 1, den, mask=real)

    return partial_kernel


@functools.cache
def _combine_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def combine_kernel(acc_ptr, ml_ptr, out_ptr, n_splits, G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr,
                       DB: tl.constexpr, BLOCK_S: tl.constexpr, PDL: tl.constexpr):
        if PDL:
            tl.extra.cuda.gdc_wait()
            tl.extra.cuda.gdc_launch_dependents()
        # one program per (sample x KV head, query head, DB channels); one pass over the splits with a running max
        bh, g, d = tl.program_id(0), tl.program_id(1), tl.program_id(2) * DB + tl.arange(0, DB)
        top = tl.full((1,), float("-inf"), tl.float32)
        den = tl.zeros((1,), tl.float32)
        num = tl.zeros((DB,), tl.float32)
        for s0 in range(0, n_splits, BLOCK_S):
            s = s0 + tl.arange(0, BLOCK_S)
            ok = s < n_splits
            row = (bh * n_splits + s) * GP + g
            m = tl.load(ml_ptr + row * 2, mask=ok, other=float("-inf"))
            new_top = tl.maximum(top, tl.max(m, axis=0))
            safe = tl.where(new_top == float("-inf"), 0.0, new_top)  # nothing allowed yet
            w = tl.exp(m - safe)  # 0 for empty splits
            keep = tl.exp(top - safe)
            part = tl.load(acc_ptr + row[:, None] * D + d[None, :], mask=ok[:, None], other=0.0)
            num = num * keep + tl.sum(w[:, None] * part, axis=0)
            den = den * keep + tl.sum(w * tl.load(ml_ptr + row * 2 + 1, mask=ok, other=0.0), axis=0)
            top = new_top
        # a query with no allowed row at all (the decode graph's warm-up, all masked) gets 0, not 0/0
        out = tl.where(den > 0, num / tl.where(den > 0, den, 1.0), 0.0)
        tl.store(out_ptr + (bh * G + g) * D + d, out.to(out_ptr.dtype.element_ty))

    return combine_kernel


#: the partial kernel's config (rows per step, warps, stages) in the decode step, when its first tile is read
#: before the wait, by the most programs per SM its grid has (see the module's doc); larger grids: autotuned
STEP_CONFIGS = {1: (128, 4, 3), 2: (128, 4, 2)}

#: the split lengths the decode step chooses from, longest first; below SPLIT_ROWS a split is one tile, read whole
#: before the wait
STEP_SPLITS = (SPLIT_ROWS, 128, 64)


def partial_configs(programs_per_sm: int | None, split_rows: int = SPLIT_ROWS) -> tuple:
    """The configs the partial kernel chooses from (one: no autotuning), given the most programs per SM of its
    grid when it reads its first tile before the wait, else None, and its split length (shorter than SPLIT_ROWS:
    one tile of the whole split, four warps; a longer tile would read the next split's rows too)."""
    if split_rows < SPLIT_ROWS:
        return ((split_rows, 4, 1),)
    return (STEP_CONFIGS[programs_per_sm],) if programs_per_sm in STEP_CONFIGS else PARTIAL_CONFIGS


def step_split(rows: int, heads: int, sms: int) -> int:
    """Cache rows per program in the decode step: the longest of `STEP_SPLITS` whose grid (rows / split x heads
    programs, heads = samples x KV heads) gives two programs per SM or more, rounded; else the shortest. In the
    step (bench/bench_flash_decode.py; docs/benchmarks.md, "Decode step and its attention") about two per SM did
    best: at 2B, 8k rows in 64-row splits (264 programs) rather than 256-row ones (66), at 32k 256-row splits
    (258)."""
    for split in STEP_SPLITS:
        if rows % split == 0 and round(rows // split * heads / sms) >= 2:
            return split
    return STEP_SPLITS[-1]


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def flash_decode(q, keys, values, bias, scale: float, pdl: bool = False, *, cache_position=None,
                 prefetch: bool = True, split_rows: int | None = None, config: tuple | None = None):
    """q (B, Hq, 1, D), keys/values (B, KV, R, D), bias (B, 1, 1, R) fp32 → (B, Hq, 1, D) (as
    `static_decoder.decode_attention`); `pdl`: both kernels as programmatic dependent launches (`gemv.gemv`);
    `cache_position` (1,) int64 on the device, with `pdl`: the row this token's key and value were written to by
    the kernel before, which triggers its dependents only after its own wait (as `gemv`'s and `rope_cache`'s
    kernels do): every other row's first tile is read before the wait (`prefetch=False`: all after it), and the
    split length follows `step_split`. `split_rows` (a power of two dividing the cache's rows; None: as said) and
    `config` ((rows per step, warps, stages): no autotuning) are there to measure other forms
    (bench/bench_flash_decode.py)."""
    if not usable(q, keys):
        raise ValueError(f"flash_decode: expected one fp16/bf16 CUDA query token, head dim 64 or 128, at most 16 query "
                         f"heads per KV head and cache rows a multiple of {SPLIT_ROWS}; got q {tuple(q.shape)} "
                         f"{q.dtype}, keys {tuple(keys.shape)}")
    b, hq, _, d = q.shape
    kv, rows = keys.shape[1], keys.shape[2]
    prefetch = prefetch and pdl and cache_position is not None
    if prefetch and (cache_position.numel() != 1 or cache_position.dtype != torch.int64):
        raise ValueError(f"flash_decode: expected the cache position as one int64; got {tuple(cache_position.shape)} "
                         f"{cache_position.dtype}")
    sms = _sm_count(q.device.index)
    if split_rows is None:
        split_rows = step_split(rows, b * kv, sms) if prefetch else SPLIT_ROWS
    if split_rows & (split_rows - 1) or rows % split_rows or (config is not None and config[0] > split_rows):
        raise ValueError(f"flash_decode: split_rows must be a power of two dividing the cache's {rows} rows, and "
                         f"at least the config's rows per step; got {split_rows}, config {config}")
    g, n = hq // kv, rows // split_rows
    per_sm = -(-n * b * kv // sms) if prefetch else None
    partial_kernel = _partial_kernel((tuple(config),) if config is not None else partial_configs(per_sm, split_rows))
    acc = torch.empty((b * kv, n, 16, d), dtype=torch.float32, device=q.device)
    ml = torch.empty((b * kv, n, 16, 2), dtype=torch.float32, device=q.device)
    out = torch.empty_like(q)
    partial_kernel[(n, b * kv)](q.contiguous(), keys, values, bias.contiguous(), cache_position if prefetch else bias,
                                acc, ml, scale, rows, kv, n, G=g, GP=16, D=d, SPLIT=split_rows, PDL=pdl,
                                PREFETCH=prefetch, **launch(pdl))
    block_s = min(256, max(16, 1 << (n - 1).bit_length()))  # the combine's splits per step: all, up to 256
    _combine_kernel()[(b * kv, g, d // 32)](acc, ml, out, n, G=g, GP=16, D=d, DB=32, BLOCK_S=block_s, PDL=pdl,
                                            **launch(pdl), num_warps=4)
    return out
