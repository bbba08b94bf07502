"""Where the plugin tests find the TensorRT header sets.

The headers are found under $VIDEOROPE_TRT_HEADERS (default: ../shared/third_party beside the checkout), one
folder per version: tensorrt-<version>/include. Tests skip with the reason when nvcc or a header set is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEADER_VERSIONS = ("10.3.0", "10.13.3", "11.1.0")
#: One architecture keeps the shared build fast; the resource test covers the deployment architectures.
TEST_ARCHS = ("86",)


def headers_root() -> Path:
    return Path(os.environ.get("VIDEOROPE_TRT_HEADERS", REPO.parent / "shared" / "third_party"))


def header_dir(version: str) -> Path:
    """The include folder of one TensorRT header set (it may be absent)."""
    return headers_root() / f"tensorrt-{version}" / "include"


def trt_include(version: str) -> Path:
    path = header_dir(version)
    if not (path / "NvInferRuntime.h").is_file():
        pytest.skip(f"TensorRT {version} headers not found at {path} (set VIDEOROPE_TRT_HEADERS)")
    return path
