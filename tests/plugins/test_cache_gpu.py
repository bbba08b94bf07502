"""On a GPU: the VideoRopeCache plugin through TensorRT's whole call sequence (driver_cache.cpp: every driver case,
for the library built against each header set), and the kernel through `plugins/cuda.py` against the float64
reference, in place, out of place and replayed from a CUDA graph with new offsets. Skips without CUDA."""

from __future__ import annotations

import numpy as np
import pytest
from test_cache_op import make, written

from videorope_trt.plugins import build as plugin_build
from videorope_trt.plugins.reference import VideoRopeCache
from videorope_trt.rope.contract import RotaryAttrs

from plugin_env import HEADER_VERSIONS, trt_include

pytestmark = [pytest.mark.gpu, pytest.mark.nvcc]
ATOL = {"float32": 5e-6, "float16": 4e-3, "bfloat16": 3e-2}  # |x| <= ~5: one rounding of the dtype, plus fp32 math


@pytest.fixture(scope="module")
def arch() -> str:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU: the VideoRopeCache kernel and plugin run on the H200 (pytest -m gpu)")
    major, minor = torch.cuda.get_device_capability(0)
    return f"{major}{minor}"


@pytest.fixture(scope="module")
def kernel_lib(arch, nvcc, tmp_path_factory):
    from videorope_trt.plugins.cuda import load

    out = tmp_path_factory.mktemp("cache-kernel")
    return load(str(plugin_build.build(plugin_build.BuildConfig(out, kernel_only=True, archs=(arch,), ptx=False))))


@pytest.mark.parametrize("version", HEADER_VERSIONS)
def test_driver_cases_on_the_gpu(arch, nvcc, tmp_path, version):
    from videorope_trt.plugins.driver import run_cache
    from videorope_trt.plugins.driver.run import Driver, build_driver

    include = trt_include(version)
    plugin = plugin_build.build(plugin_build.BuildConfig(tmp_path, include, (arch,), ptx=False))
    driver = Driver(build_driver(tmp_path, include, nvcc))
    results = run_cache.run_all(driver, plugin, protocol_only=False)
    failed = [(r["name"], r["q"], r["k_rows"], r["v_rows_wrong_bits"], r["untouched_rows_changed"], r["aliases"])
              for r in results if not r["passed"]]
    assert not failed, failed
    assert len(results) == len(run_cache.cases())


def _on_gpu(arrays: dict, dtype):
    import torch

    t = {n: torch.from_numpy(np.ascontiguousarray(a)).cuda() for n, a in arrays.items()}
    for n in ("q", "k", "v", "k_cache", "v_cache"):
        t[n] = t[n].to(dtype)
    return t


def _snapshot(t: dict) -> dict:
    """The tensors' values in float64 on the host (the caches before a call, the inputs the kernel saw)."""
    return {n: x.double().cpu().numpy() if x.is_floating_point() else x.cpu().numpy() for n, x in t.items()}


def _check(t, before: dict, attrs, q_rot, offsets, dtype_name, s, c):
    """q_rot and both caches after the call against the float64 reference of `before` (the inputs as the kernel saw
    them, caches included) with `offsets`: written rows within the dtype's rounding, every other row exactly."""
    inputs = dict(before, positions=before["positions"].astype(np.float32),
                  inv_freq=before["inv_freq"].astype(np.float32), write_offset=np.asarray(offsets, dtype=np.int32))
    ref = VideoRopeCache(*inputs.values(), attrs)
    np.testing.assert_allclose(q_rot.double().cpu().numpy(), ref[0], rtol=0, atol=ATOL[dtype_name])
    rows = written(offsets, s, c)
    for name, want in (("k_cache", ref[1]), ("v_cache", ref[2])):
        got = t[name].double().cpu().numpy().transpose(0, 2, 1, 3)
        np.testing.assert_allclose(got[rows], want.transpose(0, 2, 1, 3)[rows], rtol=0, atol=ATOL[dtype_name])
        untouched = before[name].transpose(0, 2, 1, 3)[~rows]
        np.testing.assert_array_equal(got[~rows], untouched)  # exactly what the cache held


@pytest.mark.parametrize("dtype_name", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("attrs,f,d", [(RotaryAttrs(0, 0, 1.0), 64, 128), (RotaryAttrs(1, 1, 0.9), 32, 128),
                                       (RotaryAttrs(0, 1, 1.0), 3, 10), (RotaryAttrs(1, 0, 1.0), 24, 64)])
def test_kernel_writes_the_cache_in_place(kernel_lib, dtype_name, attrs, f, d):
    import torch

    from videorope_trt.plugins.cuda import rotate_into_cache

    offsets, s, c = (0, 7, -3, 30), 9, 32
    arrays = make(attrs, f, offsets, s=s, hq=6, kv=2, d=d, c=c, dtype=np.float32, seed=f)
    t = _on_gpu(arrays, getattr(torch, dtype_name))
    inputs = {n: t[n].clone() for n in ("q", "k", "v")}
    before = _snapshot(t)
    q_rot = rotate_into_cache(*t.values(), attrs, lib=kernel_lib)
    torch.cuda.synchronize()
    for n, x in inputs.items():
        assert torch.equal(t[n], x), f"{n} was modified"
    _check(t, before, attrs, q_rot, offsets, dtype_name, s, c)
    q_in_place = t["q"]  # out_q may be q itself
    rotate_into_cache(*t.values(), attrs, out_q=q_in_place, lib=kernel_lib)
    torch.cuda.synchronize()
    assert torch.equal(q_in_place, q_rot)


def test_kernel_replays_from_a_cuda_graph_with_new_offsets(kernel_lib):
    """No allocation or synchronization in the launch: a captured step replays with offsets changed on the device."""
    import torch

    from videorope_trt.plugins.cuda import rotate_into_cache

    attrs = RotaryAttrs(layout=1)
    arrays = make(attrs, 64, (5, 40), s=1, hq=28, kv=4, d=128, c=64, dtype=np.float32)
    t = _on_gpu(arrays, torch.float16)
    out = torch.empty_like(t["q"])
    rotate_into_cache(*t.values(), attrs, out_q=out, lib=kernel_lib)  # warm-up outside the capture
    torch.cuda.synchronize()
    fresh = _on_gpu(arrays, torch.float16)
    t["k_cache"].copy_(fresh["k_cache"])  # the warm-up's rows are gone: only the replay may write
    t["v_cache"].copy_(fresh["v_cache"])
    before = _snapshot(t)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        rotate_into_cache(*t.values(), attrs, out_q=out, lib=kernel_lib)
    t["write_offset"].copy_(torch.tensor([11, 63], dtype=torch.int32))
    graph.replay()
    torch.cuda.synchronize()
    _check(t, before, attrs, out, (11, 63), "float16", 1, 64)


def test_kernel_refuses_what_it_cannot_index(kernel_lib):
    import torch

    from videorope_trt.plugins.cuda import rotate_into_cache

    t = _on_gpu(make(RotaryAttrs(), 4, (0,), dtype=np.float32), torch.float16)
    strided = t["k_cache"].transpose(2, 3).contiguous().transpose(2, 3)  # same shape, not contiguous
    with pytest.raises(ValueError, match="k_cache must be a contiguous CUDA tensor, got .*contiguous=False"):
        rotate_into_cache(*dict(t, k_cache=strided).values(), lib=kernel_lib)
    with pytest.raises(ValueError, match="write_offset must be a contiguous CUDA tensor, got device=cpu"):
        rotate_into_cache(*dict(t, write_offset=t["write_offset"].cpu()).values(), lib=kernel_lib)
    with pytest.raises(ValueError, match="write_offset must be int32"):
        rotate_into_cache(*dict(t, write_offset=t["write_offset"].long()).values(), lib=kernel_lib)
