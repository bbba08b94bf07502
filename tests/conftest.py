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
