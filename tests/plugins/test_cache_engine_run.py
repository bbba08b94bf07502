"""Where a full TensorRT and a GPU exist, an engine holding one VideoRopeCache node updates the caller's caches in
place: each cache output is bound to its cache input's address, two decode steps at different offsets land in the
caller's buffers, and every other row stays as it was. Not runnable in this project's CI (see test_engine_run.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from videorope_trt.plugins.reference import VideoRopeCache
from videorope_trt.rope.contract import RotaryAttrs

pytestmark = [pytest.mark.tensorrt, pytest.mark.gpu]
Q_HEADS, KV_HEADS, HEAD_DIM, FREQ, AXES = 4, 2, 64, 32, 3


def _engine(trt, model: Path, batch: int):
    from videorope_trt.trt import enable_aliased_plugin_io

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse_from_file(str(model)), [str(parser.get_error(i)) for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    enable_aliased_plugin_io(trt, config)
    profile = builder.create_optimization_profile()
    for name, heads in (("q", Q_HEADS), ("k", KV_HEADS), ("v", KV_HEADS)):
        profile.set_shape(name, (1, 1, heads, HEAD_DIM), (batch, 1, heads, HEAD_DIM), (batch, 64, heads, HEAD_DIM))
    profile.set_shape("positions", (AXES, 1, 1), (AXES, batch, 1), (AXES, batch, 64))
    for name in ("k_cache", "v_cache"):
        profile.set_shape(name, (1, KV_HEADS, 128, HEAD_DIM), (batch, KV_HEADS, 128, HEAD_DIM),
                          (batch, KV_HEADS, 128, HEAD_DIM))
    profile.set_shape("write_offset", (1,), (batch,), (batch,))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    assert serialized is not None, "engine build failed (is the aliased-I/O preview feature supported here?)"
    return trt.Runtime(logger).deserialize_cuda_engine(serialized)


def test_engine_updates_the_callers_caches_in_place(tmp_path):
    trt = pytest.importorskip("tensorrt",
                              reason="full TensorRT is not installed (its libraries come from NVIDIA's index)")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    lib = os.environ.get("VIDEOROPE_PLUGIN_LIB")
    if not lib:
        pytest.skip("set VIDEOROPE_PLUGIN_LIB to a libvideorope_trt_plugins.so built for this TensorRT")
    from test_cache_op import written
    from test_cache_rtx_build import cache_model

    from videorope_trt.trt import load_plugin_library

    load_plugin_library(trt, lib)
    attrs, batch = RotaryAttrs(layout=1), 2
    model = cache_model(tmp_path / "m.onnx", "fp16", attrs, Q_HEADS, KV_HEADS, HEAD_DIM, FREQ, AXES)
    engine = _engine(trt, model, batch)
    if hasattr(engine, "get_aliased_input_tensor"):  # TensorRT >= 10.15: what the engine reports, for the record
        print("aliased:", {o: engine.get_aliased_input_tensor(o) for o in ("q_rot", "k_cache_out", "v_cache_out")})
    ctx = engine.create_execution_context()
    rng = np.random.default_rng(0)
    caches = {n: torch.from_numpy(rng.standard_normal((batch, KV_HEADS, 128, HEAD_DIM)).astype(np.float16)).cuda()
              for n in ("k_cache", "v_cache")}
    inv = (1e4 ** (-np.arange(FREQ) / FREQ)).astype(np.float32)
    amap = (np.arange(FREQ) % AXES).astype(np.int32)
    for offsets in ((5, 100), (6, 127)):  # two decode steps; the second's rows are new rows
        before = {n: c.cpu().numpy().copy() for n, c in caches.items()}
        host = {"q": rng.standard_normal((batch, 1, Q_HEADS, HEAD_DIM)).astype(np.float16),
                "k": rng.standard_normal((batch, 1, KV_HEADS, HEAD_DIM)).astype(np.float16),
                "v": rng.standard_normal((batch, 1, KV_HEADS, HEAD_DIM)).astype(np.float16),
                "positions": (rng.random((AXES, batch, 1)) * 5000).astype(np.float32),
                "write_offset": np.asarray(offsets, dtype=np.int32)}
        dev = {n: torch.from_numpy(a).cuda() for n, a in host.items()}
        q_rot = torch.full_like(dev["q"], float("nan"))
        for name, t in dev.items():
            ctx.set_input_shape(name, tuple(t.shape))
        for name, t in {**dev, **caches, "q_rot": q_rot, "k_cache_out": caches["k_cache"],
                        "v_cache_out": caches["v_cache"]}.items():
            ctx.set_tensor_address(name, t.data_ptr())  # each cache output bound to its input's memory
        for name, t in caches.items():
            ctx.set_input_shape(name, tuple(t.shape))
        assert ctx.execute_async_v3(torch.cuda.current_stream().cuda_stream)
        torch.cuda.synchronize()
        ref = VideoRopeCache(*(x.astype(np.float64) for x in (host["q"], host["k"], host["v"])), host["positions"],
                             inv, amap, before["k_cache"].astype(np.float64), before["v_cache"].astype(np.float64),
                             host["write_offset"], attrs)
        np.testing.assert_allclose(q_rot.cpu().numpy().astype(np.float64), ref[0], rtol=0, atol=4e-3)
        untouched = ~written(offsets, 1, 128)
        for name, want in (("k_cache", ref[1]), ("v_cache", ref[2])):
            got = caches[name].cpu().numpy()
            np.testing.assert_allclose(got.astype(np.float64), want, rtol=0, atol=4e-3,
                                       err_msg=f"{name}: the caller's buffer does not hold the update")
            np.testing.assert_array_equal(got.transpose(0, 2, 1, 3)[untouched],
                                          before[name].transpose(0, 2, 1, 3)[untouched])
