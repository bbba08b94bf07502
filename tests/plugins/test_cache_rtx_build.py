"""TensorRT-RTX (ahead of time, no GPU) parses and builds a graph holding one `VideoRopeCache` node whose cache outputs
are its cache inputs' aliases: the library's second creator is found through the parser, the aliased-I/O preview
feature is accepted, and the engine builds for the plugin compiled against each header set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_rtx_build import ONNX_TYPES, TRT_TYPES, rtx_build

from videorope_trt.rope.contract import VIDEO_ROPE_CACHE, RotaryAttrs

from plugin_env import HEADER_VERSIONS, trt_include

pytestmark = [pytest.mark.rtx, pytest.mark.nvcc]
CAPACITY = 128


@pytest.fixture(scope="module", autouse=True)
def _needs_rtx():
    import importlib.util

    if any(importlib.util.find_spec(m) is None for m in ("tensorrt_rtx_bindings", "tensorrt_rtx_libs")):
        pytest.skip("TensorRT-RTX wheels not installed (pip install -r requirements/rtx.txt)")


def cache_model(path: Path, dtype="fp16", attrs=RotaryAttrs(), q_heads=4, kv_heads=2, head_dim=64, freq=32, axes=3):
    """q, k, v (dynamic B, S), positions, caches (B, KV, 128, D), write_offset -> one VideoRopeCache -> q_rot and the
    updated caches as graph outputs; inv_freq and axis_map as initializers."""
    from onnx import TensorProto, helper, numpy_helper, save

    def seq_dims(heads):
        return ["B", heads, "S", head_dim] if attrs.layout == 0 else ["B", "S", heads, head_dim]

    t = ONNX_TYPES[dtype]
    vi = helper.make_tensor_value_info
    cache = ["B", kv_heads, CAPACITY, head_dim]
    inputs = [vi("q", t, seq_dims(q_heads)), vi("k", t, seq_dims(kv_heads)), vi("v", t, seq_dims(kv_heads)),
              vi("positions", TensorProto.FLOAT, [axes, "B", "S"]), vi("k_cache", t, cache), vi("v_cache", t, cache),
              vi("write_offset", TensorProto.INT32, ["B"])]
    outputs = [vi("q_rot", t, seq_dims(q_heads)), vi("k_cache_out", t, cache), vi("v_cache_out", t, cache)]
    inits = [numpy_helper.from_array((1e4 ** (-np.arange(freq) / freq)).astype(np.float32), "inv_freq"),
             numpy_helper.from_array((np.arange(freq) % axes).astype(np.int32), "axis_map")]
    node = helper.make_node(VIDEO_ROPE_CACHE.name, list(VIDEO_ROPE_CACHE.inputs), [o.name for o in outputs],
                            domain=VIDEO_ROPE_CACHE.domain, **attrs.onnx_attributes())
    graph = helper.make_graph([node], "videorope_cache", inputs, outputs, initializer=inits)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(VIDEO_ROPE_CACHE.domain, 1)]
    save(helper.make_model(graph, opset_imports=opsets), path)
    return path


def cache_profiles(layout, q_heads=4, kv_heads=2, head_dim=64, axes=3) -> dict:
    def shape(b, s, heads):
        return [b, heads, s, head_dim] if layout == 0 else [b, s, heads, head_dim]

    ranges = ((1, 1), (1, 64), (2, 512))
    prof = {name: [shape(b, s, h) for b, s in ranges] for name, h in (("q", q_heads), ("k", kv_heads), ("v", kv_heads))}
    prof["positions"] = [[axes, b, s] for b, s in ranges]
    for name in ("k_cache", "v_cache"):
        prof[name] = [[b, kv_heads, CAPACITY, head_dim] for b, _ in ranges]
    prof["write_offset"] = [[b] for b, _ in ranges]
    return prof


@pytest.mark.parametrize("version", HEADER_VERSIONS)
def test_rtx_builds_an_aliased_cache_node_per_header_set(tmp_path, plugin_libs, version):
    trt_include(version)
    plugin = plugin_libs[version][0]
    model = cache_model(tmp_path / "m.onnx", "fp16", RotaryAttrs(layout=1))
    r = rtx_build(tmp_path, plugin, model, cache_profiles(1), ccs="SM89", aliased_io=True)
    assert r["loaded"] and r["parsed"], r["errors"]
    assert r["cache_fields"] == dict(VIDEO_ROPE_CACHE.fields)
    assert r["aliased_io"] is True
    assert r["layers"].count("LayerType.PLUGIN_V3") == 1
    assert r["outputs"] == [[name, "DataType.HALF"] for name in VIDEO_ROPE_CACHE.outputs]
    assert r["engine_bytes"] > 0


@pytest.mark.parametrize("dtype,attrs,freq", [
    ("bf16", RotaryAttrs(interleaved=1, layout=0, scale=0.5), 32),
    ("fp32", RotaryAttrs(layout=0), 16),  # partial rotary: 2F = 32 of D = 64
])
def test_rtx_negotiates_the_cache_nodes_types(tmp_path, plugin_lib, dtype, attrs, freq):
    model = cache_model(tmp_path / "m.onnx", dtype, attrs, freq=freq)
    r = rtx_build(tmp_path, plugin_lib, model, cache_profiles(attrs.layout), ccs="SM89", aliased_io=True)
    assert r["parsed"], r["errors"]
    assert r["outputs"] == [[name, TRT_TYPES[dtype]] for name in VIDEO_ROPE_CACHE.outputs]
    assert r["engine_bytes"] > 0


def test_rtx_refuses_aliased_outputs_without_the_preview_feature(tmp_path, plugin_lib):
    """The feature is required, not an optimization: with it off, TensorRT-RTX 1.7.1 still asks getAliasedInput and
    refuses the build (so the builder must call `videorope_trt.trt.enable_aliased_plugin_io`)."""
    model = cache_model(tmp_path / "m.onnx")
    r = rtx_build(tmp_path, plugin_lib, model, cache_profiles(0), ccs="SM89")
    assert r["parsed"], r["errors"]
    assert r["aliased_io"] is False and r["engine_bytes"] == 0
    assert "ALIASED_PLUGIN_IO_10_03 not enabled" in r["log"], r["log"]


def test_rtx_refuses_a_cache_node_with_a_bad_cache_shape(tmp_path, plugin_lib):
    import onnx

    model = cache_model(tmp_path / "m.onnx")
    m = onnx.load(model)
    v_cache = next(i for i in m.graph.input if i.name == "v_cache")
    v_cache.type.tensor_type.shape.dim[3].dim_value = 32  # head dim 32, k's is 64
    onnx.save(m, model)
    prof = cache_profiles(0)
    prof["v_cache"] = [[b, 2, CAPACITY, 32] for b in (1, 1, 2)]
    r = rtx_build(tmp_path, plugin_lib, model, prof, ccs="SM89", aliased_io=True)
    assert r["parsed"] and r["engine_bytes"] == 0, r  # the plugin's configurePlugin refuses it, with the reason
    assert "VideoRopeCache plugin: k_cache (-1, 2, 128, 64) and v_cache (-1, 2, 128, 32) must both be" in r["log"]


@pytest.mark.parametrize("layout", [0, 1])
def test_rtx_builds_the_decomposed_form_at_opset_18(tmp_path, plugin_lib, layout):
    """The standard-op form needs no plugin: TensorRT-RTX's parser inlines the local function (scatters included)."""
    import onnx

    from videorope_trt.plugins import cache_forms

    model = onnx.load(cache_model(tmp_path / "m.onnx", "fp16", RotaryAttrs(layout=layout)))
    model.opset_import[0].version = 18
    onnx.save(cache_forms.switch_cache_form(model, "decomposed"), tmp_path / "d.onnx")
    r = rtx_build(tmp_path, plugin_lib, tmp_path / "d.onnx", cache_profiles(layout), ccs="SM89")
    assert r["parsed"], r["errors"]
    assert "LayerType.PLUGIN_V3" not in r["layers"] and "LayerType.SCATTER" in r["layers"]
    assert r["outputs"] == [[name, "DataType.HALF"] for name in VIDEO_ROPE_CACHE.outputs]
    assert r["engine_bytes"] > 0
