"""The VideoRopeCache cases of the plugin driver (driver_cache.cpp), run by `python -m
videorope_trt.plugins.driver.run` beside VideoRope's.

Per case: random q, k, v and the positions, axis map and inv_freq of a RoPE variant (or random ones), caches filled
with a NaN whose payload marks every byte as never written, per-sequence write offsets (some partly or wholly outside
the cache); TensorRT's build-time protocol (aliasing answers included), serialize -> recreate, enqueue with the
cache outputs bound to the cache inputs' memory (or, `aliased=False`, to memory of their own, which the plugin must
fill with a copy first). Checks against the float64 numpy reference: q_rot and the written k rows within the dtype's
rounding, the written v rows bit for bit, every other cache row still the poison bit for bit.
"""

from __future__ import annotations

import ctypes
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from videorope_trt.plugins.driver.numerics import TRT_DTYPES, compare, from_bits, to_bits, variant_positions
from videorope_trt.plugins.reference import VideoRopeCache
from videorope_trt.rope.contract import LAYOUT_BHSD, VIDEO_ROPE_CACHE, RotaryAttrs

#: Cache filler per dtype: a NaN with a payload no kernel computes, so a stray write is seen bit for bit.
POISON = {"fp32": np.uint32(0x7FA5A5A5), "fp16": np.uint16(0x7DA5), "bf16": np.uint16(0x7FA5)}
BITS = {"fp32": np.uint32, "fp16": np.uint16, "bf16": np.uint16}


class CacheCaseStruct(ctypes.Structure):
    """Mirror of `CacheCase` in driver_cache.cpp."""

    _fields_ = [("q_dims", ctypes.c_int64 * 4), ("kv_dims", ctypes.c_int64 * 4), ("capacity", ctypes.c_int64),
                ("num_axes", ctypes.c_int32), ("num_freq", ctypes.c_int32), ("dtype", ctypes.c_int32),
                ("interleaved", ctypes.c_int32), ("layout", ctypes.c_int32), ("scale", ctypes.c_float),
                ("aliased", ctypes.c_int32)]


@dataclass(frozen=True)
class CacheCase:
    name: str
    dtype: str = "fp16"
    offsets: tuple = (0,)  # write_offset per sequence: B = len(offsets)
    q_heads: int = 4
    kv_heads: int = 2
    seq: int = 16
    head_dim: int = 128
    capacity: int = 64
    num_freq: int = 0  # 0: head_dim // 2
    layout: int = LAYOUT_BHSD
    interleaved: int = 0
    scale: float = 1.0
    variant: str = ""  # a videorope_trt.rope variant, or "" for random positions / axis map
    num_axes: int = 3  # random cases only
    pos_max: float = 1000.0
    aliased: bool = True
    seed: int = 0

    @property
    def batch(self) -> int:
        return len(self.offsets)

    @property
    def freq(self) -> int:
        return self.num_freq or self.head_dim // 2

    def shape(self, heads: int) -> tuple:
        if self.layout == LAYOUT_BHSD:
            return (self.batch, heads, self.seq, self.head_dim)
        return (self.batch, self.seq, heads, self.head_dim)

    @property
    def cache_shape(self) -> tuple:
        return (self.batch, self.kv_heads, self.capacity, self.head_dim)


def raw(a: np.ndarray, dtype: str) -> np.ndarray:
    """The dtype's bits of an array that holds them (fp32/fp16 arrays, bf16 as uint16) as unsigned integers."""
    return np.ascontiguousarray(a).view(BITS[dtype])


def values(bits: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values of the dtype's bits (unsigned integers)."""
    if dtype == "bf16":
        return from_bits(bits, dtype)
    return bits.view(np.float32 if dtype == "fp32" else np.float16).astype(np.float32)


def make_inputs(case: CacheCase) -> dict:
    """Float32 values exactly representable in the dtype, positions, inv_freq, axis_map, poisoned cache bits,
    offsets."""
    rng = np.random.default_rng(case.seed)
    if case.variant:
        from videorope_trt import rope

        positions = variant_positions(case.variant, case.batch, case.seq, rng)
        amap = rope.axis_map(case.variant, case.head_dim)[: case.freq].astype(np.int32)
        inv = rope.inv_freq(case.head_dim, 1e6)[: case.freq]
    else:
        positions = (rng.random((case.num_axes, case.batch, case.seq)) * case.pos_max).astype(np.float32)
        amap = rng.integers(0, case.num_axes, case.freq).astype(np.int32)
        inv = (10000.0 ** (-np.arange(case.freq) / case.freq)).astype(np.float32)

    def exact(shape):
        return from_bits(to_bits(rng.standard_normal(shape).astype(np.float32), case.dtype), case.dtype)

    poison = np.full(case.cache_shape, POISON[case.dtype], dtype=BITS[case.dtype])
    return {"q": exact(case.shape(case.q_heads)), "k": exact(case.shape(case.kv_heads)),
            "v": exact(case.shape(case.kv_heads)), "positions": positions, "inv_freq": inv, "axis_map": amap,
            "k_cache": poison, "v_cache": poison.copy(), "write_offset": np.asarray(case.offsets, dtype=np.int32)}


def written_rows(case: CacheCase) -> np.ndarray:
    """(B, C) bool: the cache rows the contract writes (0 <= row - write_offset[b] < S)."""
    rel = np.arange(case.capacity)[None, :] - np.asarray(case.offsets)[:, None]
    return (rel >= 0) & (rel < case.seq)


def run_cache(driver, plugin: Path, case: CacheCase, inputs: dict | None = None):
    """The call sequence; with inputs also enqueue -> (q_rot bits, k_cache bits, v_cache bits). Always returns the
    plugin's getAliasedInput answers for outputs 0..2 as the last element."""
    c = CacheCaseStruct((ctypes.c_int64 * 4)(*case.shape(case.q_heads)),
                        (ctypes.c_int64 * 4)(*case.shape(case.kv_heads)), case.capacity,
                        inputs["positions"].shape[0] if inputs else case.num_axes, case.freq, TRT_DTYPES[case.dtype],
                        case.interleaved, case.layout, case.scale, int(case.aliased))
    msg = ctypes.create_string_buffer(8192)
    aliases = (ctypes.c_int32 * 3)(-9, -9, -9)
    host = outs = None
    results = ()
    if inputs is not None:
        names = VIDEO_ROPE_CACHE.inputs
        arrays = [np.ascontiguousarray(to_bits(inputs[n], case.dtype) if n in ("q", "k", "v") else inputs[n])
                  for n in names]
        results = (np.empty_like(arrays[0]), np.empty_like(arrays[6]), np.empty_like(arrays[7]))
        host = (ctypes.c_void_p * 9)(*[a.ctypes.data for a in arrays])
        outs = (ctypes.c_void_p * 3)(*[r.ctypes.data for r in results])
    rc = driver.lib.vr_driver_cache_run(str(plugin).encode(), ctypes.byref(c), host, outs, aliases, msg, len(msg))
    if rc != 0:
        raise RuntimeError(f"driver, case {case.name}: {msg.value.decode()}")
    return (*results, tuple(aliases))


def check_outputs(case: CacheCase, inputs: dict, q_bits, k_bits, v_bits) -> dict:
    """The outputs against the float64 reference; rows the contract does not write must keep the poison."""
    attrs = RotaryAttrs(case.interleaved, case.layout, case.scale)
    f64 = {n: inputs[n].astype(np.float64) for n in ("q", "k", "v")}
    zeros = np.zeros(case.cache_shape)
    ref_q, ref_k, _ = VideoRopeCache(f64["q"], f64["k"], f64["v"], inputs["positions"], inputs["inv_freq"],
                                     inputs["axis_map"], zeros, zeros, inputs["write_offset"], attrs)
    rows = written_rows(case)
    # (B, KV, C, D) -> the written rows as (N, KV, D)
    pick = lambda a: a.transpose(0, 2, 1, 3)[rows]
    q = compare(values(raw(q_bits, case.dtype), case.dtype), ref_q, case.dtype)
    k = compare(pick(values(k_bits, case.dtype)), pick(ref_k), case.dtype) if rows.any() else {"passed": True}
    v_src = raw(to_bits(inputs["v"], case.dtype), case.dtype)
    if case.layout != LAYOUT_BHSD:
        v_src = v_src.transpose(0, 2, 1, 3)
    v_ref = np.zeros(case.cache_shape, dtype=v_src.dtype)
    for b, off in enumerate(case.offsets):  # each written row's source token
        for s in range(case.seq):
            if 0 <= off + s < case.capacity:
                v_ref[b, :, off + s] = v_src[b, :, s]
    v_wrong = int((pick(v_bits) != pick(v_ref)).sum())
    untouched = ~rows
    stray = int((k_bits.transpose(0, 2, 1, 3)[untouched] != POISON[case.dtype]).sum()
                + (v_bits.transpose(0, 2, 1, 3)[untouched] != POISON[case.dtype]).sum())
    return {"q": q, "k_rows": k, "v_rows_wrong_bits": v_wrong, "rows_written": int(rows.sum()),
            "untouched_rows_changed": stray,
            "passed": q["passed"] and k["passed"] and v_wrong == 0 and stray == 0}


def run_case(driver, plugin: Path, case: CacheCase) -> dict:
    inputs = make_inputs(case)
    q_bits, k_bits, v_bits, aliases = run_cache(driver, plugin, case, inputs)
    result = check_outputs(case, inputs, q_bits, k_bits, v_bits)
    expected = tuple(VIDEO_ROPE_CACHE.aliased_input(o) for o in range(3))
    result["aliases"] = list(aliases)
    result["passed"] = result["passed"] and aliases == expected
    return {**asdict(case), **result}


def cases() -> list:
    """Every variant's positions and axis map, then decode, 4k prefill, offsets at and past both ends, every dtype x
    layout x pairing, partial rotary, odd head dims (scalar path) and the unaliased path."""
    from videorope_trt import rope

    out = []
    for i, v in enumerate(sorted({v.name for v in rope.VARIANTS.values()})):
        out.append(CacheCase(f"cache-variant-{v}", ("fp32", "fp16", "bf16")[i % 3], offsets=(3, 17), seq=29,
                             variant=v, layout=i % 2, seed=i))
    out += [
        CacheCase("cache-decode-s1", "fp16", offsets=(0, 17, 39, 40), q_heads=28, kv_heads=4, seq=1, capacity=40,
                  layout=1, pos_max=131072),
        CacheCase("cache-decode-s1-bhsd", "bf16", offsets=(-1, 32), q_heads=12, kv_heads=2, seq=1, capacity=33),
        CacheCase("cache-prefill-4k", "fp16", offsets=(77,), q_heads=2, kv_heads=1, seq=4096, head_dim=64,
                  capacity=4200, layout=1, pos_max=131072),
        CacheCase("cache-prefill-4k-bf16", "bf16", offsets=(13, 0), q_heads=2, kv_heads=1, seq=4096, head_dim=64,
                  capacity=4109, num_axes=4),
        CacheCase("cache-both-ends", "fp32", offsets=(-3, 50, -40, 64), seq=17, capacity=64),
        CacheCase("cache-partial-rotary", "fp16", offsets=(5, 9), num_freq=32, layout=1, num_axes=4),
        CacheCase("cache-partial-interleaved", "fp32", offsets=(1,), num_freq=24, interleaved=1, num_axes=2),
        CacheCase("cache-odd-scalar", "fp32", offsets=(2, 0, 7), q_heads=5, kv_heads=1, seq=7, head_dim=10,
                  capacity=15),
        CacheCase("cache-odd-d7-partial", "fp16", offsets=(4,), q_heads=3, kv_heads=3, seq=9, head_dim=7,
                  num_freq=3, capacity=12, num_axes=1),
        CacheCase("cache-scaled", "bf16", offsets=(0, 31), seq=33, scale=0.7071, capacity=64),
        CacheCase("cache-qwen2vl-7b-chunk", "bf16", offsets=(100,), q_heads=28, kv_heads=4, seq=64, capacity=256,
                  layout=1, pos_max=131072),
        CacheCase("cache-unaliased", "fp32", offsets=(6, -2), seq=11, capacity=20, aliased=False),
        CacheCase("cache-unaliased-bf16", "bf16", offsets=(0,), seq=5, capacity=9, layout=1, aliased=False),
    ]
    for dtype in ("fp32", "fp16", "bf16"):
        for layout in (0, 1):
            for inter in (0, 1):
                out.append(CacheCase(f"cache-grid-{dtype}-l{layout}-i{inter}", dtype, offsets=(0, 5, 29), q_heads=6,
                                     seq=19, head_dim=96, capacity=48, layout=layout, interleaved=inter,
                                     num_axes=1 + (layout + 2 * inter) % 4, pos_max=200000.5, seed=layout + 2 * inter))
    return out


def run_all(driver, plugin: Path, protocol_only: bool) -> list:
    """Every case through the driver; prints one line per case."""
    results = []
    for case in cases():
        if protocol_only:
            aliases = run_cache(driver, plugin, case)[-1]
            ok = aliases == tuple(VIDEO_ROPE_CACHE.aliased_input(o) for o in range(3))
            results.append({**asdict(case), "aliases": list(aliases), "passed": ok, "protocol_only": True})
            continue
        r = run_case(driver, plugin, case)
        results.append(r)
        k = r["k_rows"].get("rel_l2", 0.0)
        print(f"{'ok  ' if r['passed'] else 'FAIL'} {r['name']:<34} {r['dtype']} q rel_l2={r['q']['rel_l2']:.2e} "
              f"k rel_l2={k:.2e} v_wrong={r['v_rows_wrong_bits']} stray={r['untouched_rows_changed']} "
              f"aliases={r['aliases']}", flush=True)
    return results
