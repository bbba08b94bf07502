"""The VideoRopeCache plugin compiles with VideoRope's into one library against the TensorRT 10.3, 10.13 and 11.1
headers, declares the contract's fields, answers the aliasing queries as the contract says, and passes TensorRT's
build-time call sequence (driver_cache.cpp, no GPU) for every driver case; its kernel neither spills nor uses local
memory on the deployment architectures."""

from __future__ import annotations

import ctypes
import re

import pytest

from videorope_trt.plugins import build as plugin_build
from videorope_trt.plugins.driver.numerics import TRT_DTYPES
from videorope_trt.plugins.driver.run import Driver
from videorope_trt.plugins.driver.run_cache import CacheCase, CacheCaseStruct, cases, run_cache
from videorope_trt.rope.contract import VIDEO_ROPE, VIDEO_ROPE_CACHE

from plugin_env import HEADER_VERSIONS, trt_include

pytestmark = pytest.mark.nvcc


@pytest.mark.parametrize("version", HEADER_VERSIONS)
def test_cache_creator_and_protocol_per_header_set(plugin_libs, version):
    trt_include(version)  # skips with the reason when this header set is absent
    plugin, driver_lib = plugin_libs[version]
    driver = Driver(driver_lib)
    assert driver.fields(plugin, VIDEO_ROPE_CACHE.name) == VIDEO_ROPE_CACHE.fields
    assert driver.fields(plugin) == VIDEO_ROPE.fields  # the library still serves VideoRope
    expected = tuple(VIDEO_ROPE_CACHE.aliased_input(o) for o in range(3))
    assert expected == (-1, 6, 7)
    for case in cases()[::3]:  # create, clone, V2 build capability, aliases, types, shapes, formats, configure, ...
        assert run_cache(driver, plugin, case)[-1] == expected, case.name


def _raw_case(plugin, driver, q_dims, kv_dims, capacity=16, num_freq=4, layout=0, interleaved=0):
    c = CacheCaseStruct((ctypes.c_int64 * 4)(*q_dims), (ctypes.c_int64 * 4)(*kv_dims), capacity, 3, num_freq,
                        TRT_DTYPES["fp16"], interleaved, layout, 1.0, 1)
    msg = ctypes.create_string_buffer(8192)
    aliases = (ctypes.c_int32 * 3)()
    rc = driver.lib.vr_driver_cache_run(str(plugin).encode(), ctypes.byref(c), None, None, aliases, msg, len(msg))
    return rc, msg.value.decode()


def test_protocol_refuses_bad_attributes_and_shapes(plugin_libs):
    plugin, driver_lib = plugin_libs.get("11.1.0") or pytest.skip("TensorRT 11.1.0 headers not found")
    driver = Driver(driver_lib)
    with pytest.raises(RuntimeError, match=r"(?s)createPlugin .*null.*VideoRopeCache plugin: layout must be 0"):
        run_cache(driver, plugin, CacheCase("bad-layout", layout=3))
    with pytest.raises(RuntimeError, match=r"(?s)configurePlugin failed.*expected 1\.\.D/2"):
        run_cache(driver, plugin, CacheCase("too-many-frequencies", head_dim=8, num_freq=5))
    rc, msg = _raw_case(plugin, driver, (2, 4, 5, 8), (2, 2, 5, 6))  # k's head dim 6, q's 8
    assert rc == 1 and re.search(r"(?s)configurePlugin failed.*k \(-1, 2, -1, 6\) must be 4-D and share B, S, D",
                                 msg)
    rc, msg = _raw_case(plugin, driver, (2, 5, 4, 8), (2, 5, 2, 8), num_freq=5, layout=1)  # F = 5 > D / 2
    assert rc == 1 and "inv_freq has 5 frequencies; expected 1..D/2" in msg


def test_cache_kernel_has_no_spills_or_local_memory_on_target_archs(nvcc, tmp_path):
    archs = ("87", "90", "110", "120")  # Orin, Hopper, Thor, RTX Blackwell
    report = plugin_build.compile_kernel(nvcc, tmp_path / "k.o", archs, ptx=False, resource_usage=True,
                                         source="videorope_cache_kernel.cu")
    usage = re.findall(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", report)
    assert len(usage) >= 18 * len(archs), report[-2000:]  # 3 dtypes x 2 pairings x 3 vector widths per architecture
    assert all(u == ("0", "0", "0") for u in usage), report[-2000:]


def test_kernel_only_library_exports_both_launchers(nvcc, tmp_path):
    import subprocess

    lib = plugin_build.build(plugin_build.BuildConfig(tmp_path, kernel_only=True, archs=("86",), ptx=False))
    out = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True, check=True)
    symbols = {line.split()[-1] for line in out.stdout.splitlines() if line.split()[1] == "T"}
    assert symbols == {"videorope_launch", "videorope_params_size", "videorope_cache_launch",
                       "videorope_cache_params_size"}
    from videorope_trt.plugins.cuda import CacheParams, load

    handle = load(str(lib))  # opens without a GPU and checks both parameter structs against the library
    assert handle.videorope_cache_params_size() == ctypes.sizeof(CacheParams)
