"""Fixtures for the plugin tests: nvcc, one shared build of the plugin and the driver per TensorRT header set."""

from __future__ import annotations

from pathlib import Path

import pytest
from plugin_env import HEADER_VERSIONS, TEST_ARCHS, header_dir

from videorope_trt.plugins import build as plugin_build


@pytest.fixture(scope="session")
def nvcc() -> str:
    try:
        return plugin_build.find_nvcc()
    except plugin_build.BuildError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def kernel_object(nvcc, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kernel") / "videorope_kernel.o"
    plugin_build.compile_kernel(nvcc, out, TEST_ARCHS, ptx=False)
    return out


@pytest.fixture(scope="session")
def plugin_libs(nvcc, kernel_object, tmp_path_factory) -> dict:
    """{version: (plugin library, driver library)} built against each header set that is present."""
    from videorope_trt.plugins.driver.run import build_driver

    libs = {}
    for version in HEADER_VERSIONS:
        path = header_dir(version)
        if not (path / "NvInferRuntime.h").is_file():
            continue
        out = tmp_path_factory.mktemp(f"trt-{version}")
        plugin_build.compile_plugin_object(nvcc, path, out / "videorope_plugin.o")
        plugin_build.link(nvcc, [kernel_object, out / "videorope_plugin.o"], out / plugin_build.PLUGIN_LIB)
        libs[version] = (out / plugin_build.PLUGIN_LIB, build_driver(out, path, nvcc))
    return libs


@pytest.fixture(scope="session")
def plugin_lib(plugin_libs) -> Path:
    if "11.1.0" not in plugin_libs:
        pytest.skip("TensorRT 11.1.0 headers not found (set VIDEOROPE_TRT_HEADERS)")
    return plugin_libs["11.1.0"][0]
