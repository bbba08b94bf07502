"""Each ONNX form of `VideoRope` (plugin via the ORT Python op, native, decomposed) equals the numpy reference in
ONNX Runtime on a small exported graph, and the forms have the structure they promise."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from videorope_trt.export import rotary
from videorope_trt.plugins import ort_op, torch_op
from videorope_trt.rope.apply import video_rope_numpy
from videorope_trt.rope.contract import ONNX_DOMAIN, RotaryAttrs

TOL = 2e-6  # fp32, |x| ~ 1: the forms compute the angle in fp32, the reference in float64


class _Rope(torch.nn.Module):
    def __init__(self, inv_freq, axis_map, attrs):
        super().__init__()
        self.attrs = attrs
        self.register_buffer("inv_freq", torch.from_numpy(inv_freq))
        self.register_buffer("axis_map", torch.from_numpy(axis_map))

    def forward(self, x, positions):
        return torch_op.apply(x * 1.0, positions, self.inv_freq, self.axis_map, self.attrs)


def _export(f, attrs, a=3):
    rng = np.random.default_rng(f + attrs.layout)
    inv_freq = (1.0 / 10000 ** (np.arange(f) / f)).astype(np.float32)
    axis_map = rng.integers(0, a, f).astype(np.int32)
    model = _Rope(inv_freq, axis_map, attrs)
    x = torch.randn(2, 3, 4, 10)
    positions = torch.rand(a, 2, 4 if attrs.layout == 0 else 3) * 100
    b, s = torch.export.Dim("B"), torch.export.Dim("S")
    seq_axis = 2 if attrs.layout == 0 else 1
    prog = torch.onnx.export(model, (x, positions), dynamo=True, opset_version=23, verbose=False,
                             custom_translation_table=rotary.translation_table(),
                             dynamic_shapes=({0: b, seq_axis: s}, {1: b, 2: s}))
    return prog.model_proto, inv_freq, axis_map


def _run(model, x, positions):
    sess = ort.InferenceSession(model.SerializeToString(), ort_op.session_options(), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    return sess.run(None, {names[0]: x, names[1]: positions})[0]


@pytest.mark.parametrize("form", sorted(rotary.FORMS))
@pytest.mark.parametrize("attrs,f", [(RotaryAttrs(0, 0, 1.0), 5), (RotaryAttrs(1, 1, 0.8), 4),
                                     (RotaryAttrs(0, 1, 1.0), 3)])
def test_form_matches_numpy_reference(form, attrs, f):
    base, inv_freq, axis_map = _export(f, attrs)
    model = rotary.switch_form(onnx.ModelProto.FromString(base.SerializeToString()), form)
    onnx.checker.check_model(model)
    rng = np.random.default_rng(1)
    # other batch and sequence sizes than traced: the graph is dynamic; fractional positions (ATS delta)
    x = rng.standard_normal((3, 6, 4, 10)).astype(np.float32) if attrs.layout else \
        rng.standard_normal((3, 3, 7, 10)).astype(np.float32)
    s = 6 if attrs.layout else 7
    positions = (rng.random((3, 3, s)) * 300).astype(np.float32)
    expected = video_rope_numpy(x, positions, inv_freq, axis_map, attrs)
    got = _run(model, x, positions)
    np.testing.assert_allclose(got, expected, atol=TOL * 10, rtol=0)
    # partial rotary (2F < D): the trailing dims pass through untouched
    np.testing.assert_array_equal(got[..., 2 * f:], x[..., 2 * f:])


def test_form_structure():
    base, _, _ = _export(4, RotaryAttrs())
    types = {form: [(n.domain, n.op_type) for n in rotary.switch_form(onnx.ModelProto.FromString(
        base.SerializeToString()), form).graph.node] for form in rotary.FORMS}
    plugin = [n for n in base.graph.node if n.op_type == "VideoRope"]
    assert len(plugin) == 1 and plugin[0].domain == ONNX_DOMAIN
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in plugin[0].attribute}
    assert attrs["plugin_namespace"] == b"videorope" and attrs["plugin_version"] == b"1"
    assert ("", "RotaryEmbedding") in types["native"] and all(d in ("", "ai.onnx") for d, _ in types["native"])
    assert types["decomposed"] == [("videorope", "VideoRopeDecomposed")]
    model = rotary.switch_form(onnx.ModelProto.FromString(base.SerializeToString()), "decomposed")
    body = {n.op_type for f in model.functions for n in f.node}
    assert all(onnx.defs.has(op) for op in body), body


def test_unknown_form_is_rejected():
    with pytest.raises(ValueError, match="unknown rotary form 'fused'; expected one of"):
        rotary.switch_form(onnx.ModelProto(), "fused")


def test_wrong_form_would_fail():
    """The comparison is sharp: a sign flip in the reference's attrs (other pairing) is caught."""
    base, inv_freq, axis_map = _export(5, RotaryAttrs())
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 4, 10)).astype(np.float32)
    positions = (rng.random((3, 2, 4)) * 50).astype(np.float32)
    got = _run(rotary.switch_form(base, "decomposed"), x, positions)
    other = video_rope_numpy(x, positions, inv_freq, axis_map, RotaryAttrs(interleaved=1))
    assert np.abs(got - other).max() > 1e-2
