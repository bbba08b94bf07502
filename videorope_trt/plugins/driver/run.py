"""Run the VideoRope and VideoRopeCache plugins as TensorRT would (driver*.cpp, no libnvinfer) over many cases;
compare with numpy.

    python -m videorope_trt.plugins.driver.run --trt-include DIR --work DIR --out report.json [--archs 90]
        [--ops VideoRope,VideoRopeCache]

Builds the plugin library and the driver against the same TensorRT headers, then for every case: random inputs
(positions and axis maps of every RoPE variant in `videorope_trt.rope`, plus random maps with A <= 4, odd sizes,
S = 1, fractional and very large positions, both layouts, interleaved pairs, partial rotary, fp32/fp16/bf16),
the full build-time protocol, serialize -> recreate, enqueue into a poisoned output, and the error against the
float64 numpy reference. The VideoRopeCache cases (run_cache.py) add the aliasing answers, in-place cache writes at
per-sequence offsets and poisoned rows that must stay untouched. Without a GPU, `--protocol-only` runs everything but
the enqueue.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from videorope_trt.artifact.atomic import atomic_file, write_atomic
from videorope_trt.plugins import build as plugin_build
from videorope_trt.plugins.driver.numerics import TRT_DTYPES, compare, from_bits, to_bits, variant_positions
from videorope_trt.plugins.reference import VideoRope
from videorope_trt.rope.contract import LAYOUT_BHSD, RotaryAttrs

DRIVER_LIB = "libvideorope_driver.so"
DRIVER_SOURCES = ("driver.cpp", "driver_cache.cpp")  # VideoRope's protocol, VideoRopeCache's
class CaseStruct(ctypes.Structure):
    """Mirror of `Case` in driver.cpp."""

    _fields_ = [("dims", ctypes.c_int64 * 4), ("num_axes", ctypes.c_int32), ("num_freq", ctypes.c_int32),
                ("dtype", ctypes.c_int32), ("interleaved", ctypes.c_int32), ("layout", ctypes.c_int32),
                ("scale", ctypes.c_float)]


@dataclass(frozen=True)
class Case:
    name: str
    dtype: str = "fp16"
    batch: int = 2
    heads: int = 4
    seq: int = 16
    head_dim: int = 128
    num_freq: int = 0  # 0: head_dim // 2
    layout: int = LAYOUT_BHSD
    interleaved: int = 0
    scale: float = 1.0
    variant: str = ""  # a videorope_trt.rope variant, or "" for random positions / axis map
    num_axes: int = 3  # random cases only
    pos_max: float = 1000.0  # random cases: positions uniform in [0, pos_max), fractional
    seed: int = 0

    @property
    def freq(self) -> int:
        return self.num_freq or self.head_dim // 2

    @property
    def x_shape(self) -> tuple:
        if self.layout == LAYOUT_BHSD:
            return (self.batch, self.heads, self.seq, self.head_dim)
        return (self.batch, self.seq, self.heads, self.head_dim)


def build_driver(out_dir: Path, trt_include: Path, nvcc=None) -> Path:
    """Compile the driver (host code + the CUDA runtime, statically) into out_dir; returns the library path."""
    nvcc = plugin_build.find_nvcc(nvcc)
    trt_include = plugin_build.check_trt_include(trt_include)
    out_dir.mkdir(parents=True, exist_ok=True)
    here = Path(__file__).resolve().parent
    sources = [str(here / name) for name in DRIVER_SOURCES]
    with atomic_file(out_dir / DRIVER_LIB) as partial:
        plugin_build._run([nvcc, "-std=c++17", "-O2", "-Xcompiler", "-fPIC,-Wall,-Wextra", "-isystem",
                           str(trt_include), "-shared", "-cudart", "static", *sources, "-o", str(partial), "-ldl"],
                          "compiling the plugin test driver")
    return out_dir / DRIVER_LIB


class Driver:
    def __init__(self, path: Path):
        self.lib = ctypes.CDLL(str(path))
        self.lib.vr_driver_run.argtypes = [ctypes.c_char_p, ctypes.POINTER(CaseStruct), ctypes.c_void_p,
                                           ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        self.lib.vr_driver_fields.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
        self.lib.vr_driver_creator_fields.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
        self.lib.vr_driver_cache_run.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                                 ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]

    def fields(self, plugin: Path, creator: str = "VideoRope") -> tuple:
        """The declared fields of one creator of the library, as ((name, PluginFieldType name), ...)."""
        buf = ctypes.create_string_buffer(4096)
        if self.lib.vr_driver_creator_fields(str(plugin).encode(), creator.encode(), buf, len(buf)) != 0:
            raise RuntimeError(f"driver: {buf.value.decode()}")
        return tuple(tuple(f.split(":")) for f in buf.value.decode().split(","))

    def run(self, plugin: Path, case: Case, inputs=None):
        """The TensorRT call sequence; with inputs (x bits, positions, inv_freq, axis_map) also enqueue -> y bits."""
        c = CaseStruct((ctypes.c_int64 * 4)(*case.x_shape), inputs[1].shape[0] if inputs else case.num_axes,
                       case.freq, TRT_DTYPES[case.dtype], case.interleaved, case.layout, case.scale)
        msg = ctypes.create_string_buffer(8192)
        host, y = None, None
        if inputs is not None:
            arrays = [np.ascontiguousarray(a) for a in inputs]
            host = (ctypes.c_void_p * 4)(*[a.ctypes.data for a in arrays])
            y = np.empty_like(arrays[0])
        rc = self.lib.vr_driver_run(str(plugin).encode(), ctypes.byref(c), host,
                                    None if y is None else y.ctypes.data, msg, len(msg))
        if rc != 0:
            raise RuntimeError(f"driver, case {case.name}: {msg.value.decode()}")
        return y


def make_inputs(case: Case):
    """(x float32 values exactly representable in the dtype, positions, inv_freq, axis_map)."""
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
    x = from_bits(to_bits(rng.standard_normal(case.x_shape).astype(np.float32), case.dtype), case.dtype)
    return x, positions, inv, amap


def run_case(driver: Driver, plugin: Path, case: Case) -> dict:
    x, positions, inv, amap = make_inputs(case)
    attrs = RotaryAttrs(case.interleaved, case.layout, case.scale)
    ref = VideoRope(x.astype(np.float64), positions, inv, amap, attrs)
    bits = driver.run(plugin, case, (to_bits(x, case.dtype), positions, inv, amap))
    result = compare(from_bits(bits, case.dtype), ref, case.dtype)
    return {**asdict(case), "pos_abs_max": float(np.abs(positions).max()), **result}


def cases() -> list:
    """Every variant's positions and axis map, then the shapes and attributes the kernel must get right."""
    from videorope_trt import rope

    out = []
    variants = sorted({v.name for v in rope.VARIANTS.values()})
    for i, v in enumerate(variants):
        dtype = ("fp32", "fp16", "bf16")[i % 3]
        out.append(Case(f"variant-{v}", dtype, batch=2, heads=3, seq=61, variant=v, layout=i % 2, seed=i))
    grid = [
        Case("decode-s1", "fp16", batch=1, heads=28, seq=1, layout=1, num_axes=3, pos_max=131072),
        Case("decode-s1-b5", "bf16", batch=5, heads=4, seq=1, num_axes=4, pos_max=131072),
        Case("odd-scalar", "fp32", batch=3, heads=5, seq=7, head_dim=10, num_axes=2),
        Case("odd-d7-partial", "fp16", batch=1, heads=3, seq=9, head_dim=7, num_freq=3, num_axes=1),
        Case("odd-d7-interleaved", "bf16", batch=2, heads=1, seq=5, head_dim=7, num_freq=3, interleaved=1),
        Case("partial-rotary", "fp16", batch=2, heads=4, seq=33, num_freq=32, layout=1, num_axes=4),
        Case("partial-interleaved", "fp32", batch=1, heads=2, seq=17, num_freq=24, interleaved=1, num_axes=2),
        Case("interleaved-bshd", "bf16", batch=2, heads=7, seq=129, interleaved=1, layout=1),
        Case("scaled", "fp32", batch=1, heads=4, seq=50, scale=0.7071, num_axes=3),
        Case("large-positions", "fp32", batch=1, heads=2, seq=300, pos_max=1 << 20, num_axes=4),
        Case("gqa-long", "fp16", batch=1, heads=4, seq=4097, layout=1, pos_max=131072),
        Case("d64-fp32-vec4", "fp32", batch=2, heads=3, seq=31, head_dim=64, num_axes=3),
        Case("d2-single-pair", "fp16", batch=2, heads=2, seq=3, head_dim=2, num_axes=1),
    ]
    for dtype in ("fp32", "fp16", "bf16"):
        for layout in (0, 1):
            for inter in (0, 1):
                grid.append(Case(f"grid-{dtype}-l{layout}-i{inter}", dtype, batch=3, heads=5, seq=37, head_dim=96,
                                 layout=layout, interleaved=inter, num_axes=1 + (layout + 2 * inter) % 4,
                                 pos_max=200000.5, seed=layout + 2 * inter))
    return out + grid


def _run_rope(driver: Driver, plugin: Path, protocol_only: bool) -> list:
    results = []
    for case in cases():
        if protocol_only:
            driver.run(plugin, case)
            results.append({**asdict(case), "passed": True, "protocol_only": True})
            continue
        results.append(run_case(driver, plugin, case))
        r = results[-1]
        print(f"{'ok  ' if r['passed'] else 'FAIL'} {r['name']:<34} {r['dtype']} rel_l2={r['rel_l2']:.2e} "
              f"max_abs={r['max_abs_err']:.2e} unwritten={r['unwritten']} over={r['over_bound']}", flush=True)
    return results


def main(argv=None) -> int:
    from videorope_trt.plugins.driver import run_cache

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trt-include", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True, help="folder for the built libraries")
    ap.add_argument("--out", type=Path, required=True, help="JSON report")
    ap.add_argument("--archs", default="90")
    ap.add_argument("--ops", default="VideoRope,VideoRopeCache", help="which ops' cases to run")
    ap.add_argument("--protocol-only", action="store_true", help="no GPU: stop before enqueue")
    args = ap.parse_args(argv)
    ops = args.ops.split(",")
    if not set(ops) <= {"VideoRope", "VideoRopeCache"} or not ops:
        ap.error(f"--ops: expected VideoRope and/or VideoRopeCache, got {args.ops!r}")
    plugin = plugin_build.build(plugin_build.BuildConfig(args.work, args.trt_include, tuple(args.archs.split(",")),
                                                         ptx=False))
    driver = Driver(build_driver(args.work, args.trt_include))
    report = {"trt_include": str(args.trt_include)}
    if "VideoRope" in ops:
        report |= {"fields": driver.fields(plugin), "cases": _run_rope(driver, plugin, args.protocol_only)}
    if "VideoRopeCache" in ops:
        report |= {"cache_fields": driver.fields(plugin, "VideoRopeCache"),
                   "cache_cases": run_cache.run_all(driver, plugin, args.protocol_only)}
    results = report.get("cases", []) + report.get("cache_cases", [])
    report["passed"] = all(r["passed"] for r in results)
    write_atomic(args.out, json.dumps(report, indent=1))
    print(f"{sum(r['passed'] for r in results)}/{len(results)} cases passed")
    return 0 if report["passed"] else 1

if __name__ == "__main__":
    sys.exit(main())
