"""Fixtures for the plugin tests: nvcc, one shared build of the plugin and the driver per TensorRT header set."""

from __future__ import annotations

from pathlib import Path

import pytest

from videorope_trt.plugins import build as plugin_build

from plugin_env import HEADER_VERSIONS, TEST_ARCHS, header_dir


@pytest.fixture(scope="session")
def nvcc() -> str:
    try:
        return plugin_build.find_nvcc()
    except plugin_build.BuildError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def kernel_objects(nvcc, tmp_path_factory) -> list:
    """Both kernels (VideoRope, VideoRopeCache), compiled once."""
    return plugin_build.compile_kernels(nvcc, tmp_path_factory.mktemp("kernel"), TEST_ARCHS, ptx=False)


@pytest.fixture(scope="session")
def plugin_libs(nvcc, kernel_objects, tmp_path_factory) -> dict:
    """{version: (plugin library, driver library)} built against each header set that is present."""
    from videorope_trt.plugins.driver.run import build_driver

    libs = {}
    for version in HEADER_VERSIONS:
        path = header_dir(version)
        if not (path / "NvInferRuntime.h").is_file():
            continue
        out = tmp_path_factory.mktemp(f"trt-{version}")
        objects = plugin_build.compile_plugin_objects(nvcc, path, out)
        plugin_build.link(nvcc, [*kernel_objects, *objects], out / plugin_build.PLUGIN_LIB)
        libs[version] = (out / plugin_build.PLUGIN_LIB, build_driver(out, path, nvcc))
    return libs


@pytest.fixture(scope="session")
def plugin_lib(plugin_libs) -> Path:
    if "11.1.0" not in plugin_libs:
        pytest.skip("TensorRT 11.1.0 headers not found (set VIDEOROPE_TRT_HEADERS)")
    return plugin_libs["11.1.0"][0]
