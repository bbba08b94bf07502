"""The C++ plugin compiles unchanged against TensorRT 10.3, 10.13 and 11.1 headers, exposes the contract's fields,
and passes TensorRT's build-time call sequence (run by the test driver, no GPU, no libnvinfer) for each of them."""

from __future__ import annotations

import re
import subprocess

import pytest

from videorope_trt.plugins import build as plugin_build
from videorope_trt.plugins.driver.run import Case, Driver, cases
from videorope_trt.rope.contract import VIDEO_ROPE

from plugin_env import HEADER_VERSIONS, trt_include

pytestmark = pytest.mark.nvcc


@pytest.mark.parametrize("version", HEADER_VERSIONS)
def test_creator_fields_and_protocol_per_header_set(plugin_libs, version):
    trt_include(version)  # skips with the reason when this header set is absent
    plugin, driver_lib = plugin_libs[version]
    driver = Driver(driver_lib)
    assert driver.fields(plugin) == VIDEO_ROPE.fields
    for case in cases()[::5]:  # create, clone, types, shapes, formats, configure, serialize -> recreate, attach
        driver.run(plugin, case)


def test_protocol_refuses_bad_attributes(plugin_libs):
    plugin, driver_lib = plugin_libs.get("11.1.0") or pytest.skip("TensorRT 11.1.0 headers not found")
    driver = Driver(driver_lib)
    with pytest.raises(RuntimeError, match=r"(?s)createPlugin .*returned null.*layout must be 0 .* got 3"):
        driver.run(plugin, Case("bad-layout", layout=3))
    with pytest.raises(RuntimeError, match=r"(?s)configurePlugin failed.*expected 1\.\.D/2"):
        driver.run(plugin, Case("too-many-frequencies", head_dim=8, num_freq=5))


def test_exports_only_the_entry_points(plugin_lib):
    out = subprocess.run(["nm", "-D", "--defined-only", str(plugin_lib)], capture_output=True, text=True, check=True)
    text_symbols = {line.split()[-1] for line in out.stdout.splitlines() if line.split()[1] == "T"}
    assert text_symbols == {"getCreators", "setLoggerFinder", "videorope_launch", "videorope_params_size",
                            "videorope_cache_launch", "videorope_cache_params_size"}
    ldd = subprocess.run(["ldd", str(plugin_lib)], capture_output=True, text=True).stdout
    assert "libnvinfer" not in ldd and "libcudart" not in ldd  # CUDA runtime linked statically


def test_kernel_has_no_spills_or_local_memory_on_target_archs(nvcc, tmp_path):
    archs = ("87", "90", "110", "120")  # Orin, Hopper, Thor, RTX Blackwell
    report = plugin_build.compile_kernel(nvcc, tmp_path / "k.o", archs, ptx=False, resource_usage=True)
    usage = re.findall(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", report)
    assert len(usage) >= 18 * len(archs), report[-2000:]  # 18 kernel instantiations per architecture
    assert all(u == ("0", "0", "0") for u in usage), report[-2000:]


def test_build_writes_the_library_and_reports_missing_pieces(nvcc, tmp_path):
    lib = plugin_build.build(plugin_build.BuildConfig(tmp_path, kernel_only=True, archs=("86",), ptx=False))
    assert lib.name == plugin_build.KERNEL_LIB and lib.stat().st_size > 0
    assert not list(tmp_path.glob(".build-*"))  # the temporary folder is gone
    with pytest.raises(plugin_build.BuildError, match="has no NvInferRuntime.h"):
        plugin_build.build(plugin_build.BuildConfig(tmp_path, trt_include=tmp_path))
    with pytest.raises(plugin_build.BuildError, match="nvcc not found"):
        plugin_build.find_nvcc(str(tmp_path / "no-nvcc"))


def test_build_config_rejects_bad_archs(tmp_path):
    with pytest.raises(ValueError, match="compute capabilities like '90'"):
        plugin_build.BuildConfig(tmp_path, archs=("sm_90",))
