"""A real TensorRT builder consumes the plugin: TensorRT-RTX (ahead of time, no GPU) loads the built library, maps
ONNX `VideoRope` nodes to it through its own parser and builds engines for explicit RTX compute capabilities.
Each build runs in a child process (rtx_build.py) with the `libtensorrt_rtx.so` symlink on LD_LIBRARY_PATH."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from videorope_trt.rope.contract import VIDEO_ROPE, RotaryAttrs

from plugin_env import HEADER_VERSIONS, REPO, trt_include

pytestmark = [pytest.mark.rtx, pytest.mark.nvcc]
SCRIPT = Path(__file__).resolve().parent / "rtx_build.py"
ONNX_TYPES = {"fp32": 1, "fp16": 10, "bf16": 16}  # onnx.TensorProto values
TRT_TYPES = {"fp32": "DataType.FLOAT", "fp16": "DataType.HALF", "bf16": "DataType.BF16"}


@pytest.fixture(scope="module", autouse=True)
def _needs_rtx():
    if any(importlib.util.find_spec(m) is None for m in ("tensorrt_rtx_bindings", "tensorrt_rtx_libs")):
        pytest.skip("TensorRT-RTX wheels not installed (pip install -r requirements/rtx.txt)")


def rope_model(path: Path, dtype="fp16", attrs=RotaryAttrs(), heads=4, head_dim=64, freq=32, axes=3):
    """x (dynamic B, S) -> VideoRope -> y; inv_freq and axis_map as initializers."""
    from onnx import helper, numpy_helper, save

    x_dims = ["B", heads, "S", head_dim] if attrs.layout == 0 else ["B", "S", heads, head_dim]
    x = helper.make_tensor_value_info("x", ONNX_TYPES[dtype], x_dims)
    pos = helper.make_tensor_value_info("positions", 1, [axes, "B", "S"])
    y = helper.make_tensor_value_info("y", ONNX_TYPES[dtype], x_dims)
    inv = numpy_helper.from_array((1e4 ** (-np.arange(freq) / freq)).astype(np.float32), "inv_freq")
    amap = numpy_helper.from_array((np.arange(freq) % axes).astype(np.int32), "axis_map")
    node = helper.make_node(VIDEO_ROPE.name, ["x", "positions", "inv_freq", "axis_map"], ["y"],
                            domain=VIDEO_ROPE.domain, **attrs.onnx_attributes())
    graph = helper.make_graph([node], "videorope", [x, pos], [y], initializer=[inv, amap])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(VIDEO_ROPE.domain, 1)]
    save(helper.make_model(graph, opset_imports=opsets), path)
    return path


def profiles(layout, heads, head_dim, axes=3) -> dict:
    shape = (lambda b, s: [b, heads, s, head_dim]) if layout == 0 else (lambda b, s: [b, s, heads, head_dim])
    return {"x": [shape(1, 1), shape(1, 64), shape(2, 512)], "positions": [[axes, 1, 1], [axes, 1, 64], [axes, 2, 512]]}


def rtx_build(tmp_path: Path, plugin: Path, model: Path, prof: dict, ccs="SM86,SM89,SM120",
              aliased_io=False) -> dict:
    sys.path.insert(0, str(SCRIPT.parent))
    from rtx_build import rtx_env

    report = tmp_path / "report.json"
    env = rtx_env(tmp_path / "lib")
    # the child imports this checkout's package, whichever checkout the environment has installed
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, str(SCRIPT), str(plugin), str(model), str(report), "--cc", ccs,
                           "--profiles", json.dumps(prof)] + (["--aliased-io"] if aliased_io else []),
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"TensorRT-RTX build process failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return {**json.loads(report.read_text()), "log": (proc.stdout + proc.stderr)[-4000:]}  # TensorRT's warnings, errors


@pytest.mark.parametrize("version", HEADER_VERSIONS)
def test_rtx_builds_engine_with_plugin_compiled_against_each_header_set(tmp_path, plugin_libs, version):
    trt_include(version)
    plugin = plugin_libs[version][0]
    model = rope_model(tmp_path / "m.onnx", "fp16", RotaryAttrs(layout=1))
    r = rtx_build(tmp_path, plugin, model, profiles(1, 4, 64))
    assert r["loaded"] and r["parsed"], r["errors"]
    assert r["fields"] == dict(VIDEO_ROPE.fields)
    assert "LayerType.PLUGIN_V3" in r["layers"]
    assert r["outputs"] == [["y", "DataType.HALF"]]
    assert r["engine_bytes"] > 0


@pytest.mark.parametrize("dtype,attrs,freq", [
    ("fp32", RotaryAttrs(interleaved=1, layout=0, scale=0.5), 32),
    ("bf16", RotaryAttrs(layout=0), 16),  # partial rotary: 2F = 32 of D = 64
])
def test_rtx_negotiates_types_and_layouts(tmp_path, plugin_lib, dtype, attrs, freq):
    model = rope_model(tmp_path / "m.onnx", dtype, attrs, heads=3, freq=freq)
    r = rtx_build(tmp_path, plugin_lib, model, profiles(attrs.layout, 3, 64))
    assert r["parsed"], r["errors"]
    assert r["outputs"] == [["y", TRT_TYPES[dtype]]]
    assert r["engine_bytes"] > 0


def test_rtx_reports_an_invalid_attribute_instead_of_building(tmp_path, plugin_lib):
    model = rope_model(tmp_path / "m.onnx")
    import onnx

    m = onnx.load(model)
    next(a for a in m.graph.node[0].attribute if a.name == "layout").i = 5
    onnx.save(m, model)
    r = rtx_build(tmp_path, plugin_lib, model, profiles(0, 4, 64))
    assert not r["parsed"] and r["errors"], r


def test_rtx_builds_the_exporters_plugin_form(tmp_path, plugin_lib):
    """torch.ops.videorope.VideoRope through the exporter's translation table -> the plugin-form node -> engine."""
    import torch

    from videorope_trt.export.rotary import translation_table
    from videorope_trt.plugins import torch_op

    class Rope(torch.nn.Module):
        def forward(self, x, positions, inv_freq, axis_map):
            return torch_op.apply(x, positions, inv_freq, axis_map, RotaryAttrs(layout=1))

    args = (torch.randn(1, 8, 4, 64), torch.rand(3, 1, 8) * 100, torch.rand(32), torch.zeros(32, dtype=torch.int32))
    dims = {"x": {1: torch.export.Dim("S", min=2)}, "positions": {2: torch.export.Dim("S", min=2)},
            "inv_freq": None, "axis_map": None}
    prog = torch.onnx.export(Rope().eval(), args, dynamo=True, custom_translation_table=translation_table(),
                             dynamic_shapes=dims, input_names=["x", "positions", "inv_freq", "axis_map"])
    path = tmp_path / "exported.onnx"
    prog.save(str(path))
    node = next(n for n in prog.model_proto.graph.node if n.op_type == VIDEO_ROPE.name)
    assert node.domain == VIDEO_ROPE.domain
    declared = {a.name: a.type for a in node.attribute}
    assert {name: declared[name] for name, _ in VIDEO_ROPE.fields} == {"interleaved": 2, "layout": 2, "scale": 1}
    prof = {"x": [[1, 2, 4, 64], [1, 8, 4, 64], [1, 64, 4, 64]], "positions": [[3, 1, 2], [3, 1, 8], [3, 1, 64]],
            "inv_freq": [[32]] * 3, "axis_map": [[32]] * 3}
    r = rtx_build(tmp_path, plugin_lib, path, prof)
    assert r["parsed"], r["errors"]
    assert "LayerType.PLUGIN_V3" in r["layers"] and r["engine_bytes"] > 0
