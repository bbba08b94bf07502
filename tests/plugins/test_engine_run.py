"""Where a full TensorRT runtime and a GPU exist, the plugin's engine runs and matches the numpy reference (the
ONNX Runtime op of the export tests computes the same reference). Not runnable in this project's CI: TensorRT's
library wheels only download from NVIDIA's index and TensorRT-RTX's runtime needs an RTX-class GPU."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from videorope_trt.plugins.reference import VideoRope
from videorope_trt.rope.contract import RotaryAttrs

pytestmark = [pytest.mark.tensorrt, pytest.mark.gpu]


def test_engine_matches_reference(tmp_path):
    trt = pytest.importorskip("tensorrt",
                              reason="full TensorRT is not installed (its libraries come from NVIDIA's index)")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    lib = os.environ.get("VIDEOROPE_PLUGIN_LIB")
    if not lib:
        pytest.skip("set VIDEOROPE_PLUGIN_LIB to a libvideorope_trt_plugins.so built for this TensorRT")
    from test_rtx_build import rope_model

    attrs = RotaryAttrs(layout=1)
    model = rope_model(tmp_path / "m.onnx", "fp16", attrs)
    logger = trt.Logger(trt.Logger.WARNING)
    trt.get_plugin_registry().load_library(str(Path(lib).resolve()))
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse_from_file(str(model)), [str(parser.get_error(i)) for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("x", (1, 1, 4, 64), (1, 33, 4, 64), (2, 64, 4, 64))
    profile.set_shape("positions", (3, 1, 1), (3, 1, 33), (3, 2, 64))
    config.add_optimization_profile(profile)
    engine = trt.Runtime(logger).deserialize_cuda_engine(builder.build_serialized_network(network, config))
    ctx = engine.create_execution_context()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 33, 4, 64)).astype(np.float16)
    pos = (rng.random((3, 2, 33)) * 5000).astype(np.float32)
    tensors = {"x": torch.from_numpy(x).cuda(), "positions": torch.from_numpy(pos).cuda(),
               "y": torch.empty(x.shape, dtype=torch.float16, device="cuda").fill_(float("nan"))}
    for name in ("x", "positions"):
        ctx.set_input_shape(name, tuple(tensors[name].shape))
    for name, t in tensors.items():
        ctx.set_tensor_address(name, t.data_ptr())
    assert ctx.execute_async_v3(torch.cuda.current_stream().cuda_stream)
    torch.cuda.synchronize()
    inv = (1e4 ** (-np.arange(32) / 32)).astype(np.float32)
    ref = VideoRope(x.astype(np.float64), pos, inv, (np.arange(32) % 3).astype(np.int32), attrs)
    y = tensors["y"].cpu().numpy().astype(np.float64)
    assert not np.isnan(y).any()
    assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < 2e-3
