"""Suite-wide settings and the one tiny checkpoint every package reads (tests that change a checkpoint copy it
first). With `pytest -n 2` each worker gets one core: one torch thread per worker avoids oversubscription, which
slows the tiny models' small matmuls by an order of magnitude."""

import pytest


def pytest_configure(config):
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """The tiny Qwen2-VL checkpoint (HF layout, safetensors), seed 0, built once per worker."""
    from videorope_trt.models import make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny") / "ckpt", seed=0)


@pytest.fixture(scope="session")
def plugin_library(tmp_path_factory):
    """The VideoRope plugin library (both ops) built against the TensorRT 11.1.0 headers for compute capability
    8.6, once per worker: what a TensorRT-RTX build of a plugin-form graph loads. Skips without nvcc or headers."""
    import os
    from pathlib import Path

    from videorope_trt.plugins import build as pb

    root = Path(os.environ.get("VIDEOROPE_TRT_HEADERS", Path(__file__).resolve().parents[2] / "shared" / "third_party"))
    headers = root / "tensorrt-11.1.0" / "include"
    try:
        pb.find_nvcc()
    except pb.BuildError as e:
        pytest.skip(str(e))
    if not (headers / "NvInferRuntime.h").is_file():
        pytest.skip(f"TensorRT 11.1.0 headers not found at {headers} (set VIDEOROPE_TRT_HEADERS)")
    return pb.build(pb.BuildConfig(out_dir=tmp_path_factory.mktemp("plugin"), trt_include=headers, archs=("86",),
                                   ptx=False))
