"""The ONNX forms of `VideoRopeCache`: the torch op exports as one plugin node (TensorRT's attributes, three outputs),
which runs in ONNX Runtime through the Python op; the decomposed form (standard ops in a local function) runs in
ONNX Runtime at opset 18 and 23, in fp32 and fp16, and equals the numpy reference, untouched cache rows included."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from test_cache_op import make, written

from videorope_trt.plugins import cache_forms, ort_op, torch_op
from videorope_trt.plugins.reference import VideoRopeCache
from videorope_trt.rope.contract import ONNX_DOMAIN, VIDEO_ROPE_CACHE, RotaryAttrs

ONNX_TYPES = {np.float32: TensorProto.FLOAT, np.float16: TensorProto.FLOAT16}
#: |error| against the reference rounded to the dtype: fp32 rounds cos/sin and a product; fp16 rotates in fp16.
ATOL = {np.float32: 1e-5, np.float16: 1e-2}
#: The exported step's graph inputs (inv_freq and axis_map are buffers, hence initializers).
GRAPH_INPUTS = ("q", "k", "v", "positions", "k_cache", "v_cache", "write_offset")


class _Step(torch.nn.Module):
    def __init__(self, inv_freq, axis_map, attrs):
        super().__init__()
        self.attrs = attrs
        self.register_buffer("inv_freq", torch.from_numpy(inv_freq))
        self.register_buffer("axis_map", torch.from_numpy(axis_map))

    def forward(self, q, k, v, positions, k_cache, v_cache, write_offset):
        return torch_op.apply_cache(q, k, v, positions, self.inv_freq, self.axis_map, k_cache, v_cache, write_offset,
                                    self.attrs)


def _export(attrs, f=4):
    arrays = make(attrs, f, (1, 3), dtype=np.float32)
    model = _Step(arrays["inv_freq"], arrays["axis_map"], attrs)
    args = tuple(torch.from_numpy(arrays[n]) for n in GRAPH_INPUTS)
    b, s = torch.export.Dim("B"), torch.export.Dim("S")
    seq = 2 if attrs.layout == 0 else 1
    dims = ({0: b, seq: s}, {0: b, seq: s}, {0: b, seq: s}, {1: b, 2: s}, {0: b}, {0: b}, {0: b})
    prog = torch.onnx.export(model, args, dynamo=True, opset_version=23, dynamic_shapes=dims,
                             custom_translation_table=cache_forms.translation_table())
    return prog.model_proto, arrays


def _feeds(model, arrays) -> dict:
    names = [i.name for i in model.graph.input]
    return dict(zip(names, (arrays[n] for n in GRAPH_INPUTS)))


def _run(model, feeds, custom=True):
    options = ort_op.session_options() if custom else None
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def test_export_gives_one_plugin_node():
    model, _ = _export(RotaryAttrs(1, 1, 0.5))
    nodes = [n for n in model.graph.node if n.op_type == VIDEO_ROPE_CACHE.name]
    assert len(nodes) == 1 and nodes[0].domain == ONNX_DOMAIN and len(nodes[0].output) == 3
    attrs = {a.name: a for a in nodes[0].attribute}
    assert {n: attrs[n].type for n, _ in VIDEO_ROPE_CACHE.fields} == {"interleaved": 2, "layout": 2, "scale": 1}
    assert attrs["plugin_namespace"].s == b"videorope" and attrs["plugin_version"].s == b"1"
    assert cache_forms.node_attrs(nodes[0]) == RotaryAttrs(1, 1, 0.5)
    assert cache_forms.cache_node_count(model) == 1


@pytest.mark.parametrize("form", sorted(cache_forms.CACHE_FORMS))
@pytest.mark.parametrize("attrs", [RotaryAttrs(0, 0, 1.0), RotaryAttrs(1, 1, 0.8), RotaryAttrs(0, 1, 1.2)])
def test_exported_forms_match_the_reference(form, attrs):
    base, traced = _export(attrs, f=3)  # partial rotary: 2F = 6 of D = 8
    model = cache_forms.switch_cache_form(onnx.ModelProto.FromString(base.SerializeToString()), form)
    onnx.checker.check_model(model, full_check=True)
    # other batch and sequence sizes than traced, offsets inside, across both ends and wholly outside the cache
    arrays = make(attrs, 3, (-2, 9, 0, 12), s=5, dtype=np.float32, seed=4)
    arrays["inv_freq"], arrays["axis_map"] = traced["inv_freq"], traced["axis_map"]
    got = _run(model, _feeds(model, arrays))
    ref = VideoRopeCache(*arrays.values(), attrs)
    for g, r, name in zip(got, ref, VIDEO_ROPE_CACHE.outputs):
        np.testing.assert_allclose(g, r, rtol=0, atol=ATOL[np.float32], err_msg=f"{form} {name}")
    rows = written((-2, 9, 0, 12), 5, 12)
    for g, cache in zip(got[1:], (arrays["k_cache"], arrays["v_cache"])):
        untouched = ~rows
        np.testing.assert_array_equal(g.transpose(0, 2, 1, 3)[untouched], cache.transpose(0, 2, 1, 3)[untouched])
    np.testing.assert_array_equal(got[2], ref[2])


def _cache_model(dtype, attrs, opset, d=8, f=3):
    """One VideoRopeCache node with every input a graph input, at `opset`."""
    et = ONNX_TYPES[dtype]

    def seq(h):
        return ["B", h, "S", d] if attrs.layout == 0 else ["B", "S", h, d]

    vi = helper.make_tensor_value_info
    cache = ["B", 2, "C", d]
    ins = [vi("q", et, seq(3)), vi("k", et, seq(2)), vi("v", et, seq(2)),
           vi("positions", TensorProto.FLOAT, [3, "B", "S"]), vi("inv_freq", TensorProto.FLOAT, [f]),
           vi("axis_map", TensorProto.INT32, [f]), vi("k_cache", et, cache), vi("v_cache", et, cache),
           vi("write_offset", TensorProto.INT32, ["B"])]
    outs = [vi("q_rot", et, seq(3)), vi("k_cache_out", et, cache), vi("v_cache_out", et, cache)]
    node = helper.make_node(VIDEO_ROPE_CACHE.name, list(VIDEO_ROPE_CACHE.inputs), list(VIDEO_ROPE_CACHE.outputs),
                            name="rope_cache", domain=ONNX_DOMAIN, **attrs.onnx_attributes())
    opsets = [helper.make_opsetid("", opset), helper.make_opsetid(ONNX_DOMAIN, 1)]
    return helper.make_model(helper.make_graph([node], "g", ins, outs), opset_imports=opsets)


@pytest.mark.parametrize("opset", [18, 23])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("attrs", [RotaryAttrs(0, 0, 1.0), RotaryAttrs(1, 1, 0.7)])
def test_decomposed_form_at_opset_18_and_23(opset, dtype, attrs):
    model = cache_forms.switch_cache_form(_cache_model(dtype, attrs, opset), "decomposed")
    onnx.checker.check_model(model, full_check=True)
    (function,) = model.functions
    assert {o.domain: o.version for o in function.opset_import}[""] == opset  # follows the model's import
    body = {n.op_type for n in function.node}
    assert all(onnx.defs.get_schema(op, 18, "") for op in body)  # every op exists at opset 18
    assert {"ScatterElements", "GatherElements"} <= body and not {"ScatterND", "If", "Loop"} & body
    assert all(n.domain in ("", "videorope") for n in model.graph.node)  # no custom op left for TensorRT to find
    arrays = make(attrs, 3, (4, -1), s=3, hq=3, c=9, dtype=dtype, seed=5)
    got = _run(model, arrays, custom=False)
    ref = VideoRopeCache(*arrays.values(), attrs)  # in the dtype: rounded once from float64
    for g, r, name in zip(got, ref, VIDEO_ROPE_CACHE.outputs):
        assert g.dtype == dtype, name
        np.testing.assert_allclose(g.astype(np.float64), r.astype(np.float64), rtol=0, atol=ATOL[dtype], err_msg=name)
    np.testing.assert_array_equal(got[2], ref[2])  # v rows and untouched rows: exact


def test_decomposed_form_layout_1_transposes_around_the_call():
    model = cache_forms.switch_cache_form(_cache_model(np.float32, RotaryAttrs(layout=1), 23), "decomposed")
    kinds = [n.op_type for n in model.graph.node]
    assert kinds == ["Transpose"] * 3 + ["VideoRopeCacheDecomposed", "Transpose"]
    assert [o.domain for o in model.opset_import if o.domain == ONNX_DOMAIN] == []  # the contrib import is dropped


def test_plugin_form_is_unchanged_and_unknown_forms_are_refused():
    model = _cache_model(np.float32, RotaryAttrs(), 18)
    before = model.SerializeToString()
    assert cache_forms.switch_cache_form(model, "plugin").SerializeToString() == before
    with pytest.raises(ValueError, match=r"unknown VideoRopeCache form 'fused'; expected one of \['decomposed', "):
        cache_forms.switch_cache_form(model, "fused")


def test_decomposed_form_needs_opset_18():
    with pytest.raises(ValueError, match="needs a model at opset >= 18 .* imports the default domain at 17"):
        cache_forms.switch_cache_form(_cache_model(np.float32, RotaryAttrs(), 17), "decomposed")


def test_wrong_writes_would_be_caught():
    """The comparison is sharp: the same graph with the offsets shifted by one row disagrees with the reference."""
    attrs = RotaryAttrs()
    model = cache_forms.switch_cache_form(_cache_model(np.float32, attrs, 18), "decomposed")
    arrays = make(attrs, 3, (2, 5), s=3, hq=3, c=9, dtype=np.float32)
    shifted = dict(arrays, write_offset=arrays["write_offset"] + 1)
    got = _run(model, shifted, custom=False)
    ref = VideoRopeCache(*arrays.values(), attrs)
    assert np.abs(got[1] - ref[1]).max() > 0.1 and np.abs(got[2] - ref[2]).max() > 0.1
