"""The `VideoRope` op contract: numpy reference vs torch op vs an explicit per-element loop."""

import math

import numpy as np
import pytest
import torch

from videorope_trt.plugins.reference import VideoRope
from videorope_trt.plugins.torch_op import apply
from videorope_trt.rope.contract import VIDEO_ROPE, RotaryAttrs


def _loop_reference(x, positions, inv_freq, axis_map, attrs):
    """Slowest, most literal form of the contract: one scalar rotation per (element pair)."""
    y = x.astype(np.float64).copy()
    f = len(inv_freq)
    bhsd = attrs.layout == 0
    b_, n1, n2, _ = x.shape
    for b in range(b_):
        for a in range(n1):
            for c in range(n2):
                s = c if bhsd else a
                for k in range(f):
                    ang = float(np.float32(positions[axis_map[k], b, s]) * np.float32(inv_freq[k]))  # fp32 angle
                    i, j = (2 * k, 2 * k + 1) if attrs.interleaved else (k, k + f)
                    u, v = float(x[b, a, c, i]), float(x[b, a, c, j])
                    cs, sn = math.cos(ang) * attrs.scale, math.sin(ang) * attrs.scale
                    y[b, a, c, i] = u * cs - v * sn
                    y[b, a, c, j] = v * cs + u * sn
    return y


def _inputs(rng, shape, f, axes):
    x = rng.standard_normal(shape).astype(np.float32)
    bhsd_b, s = shape[0], shape[2]
    positions = (rng.random((axes, bhsd_b, s)) * 5000 - 100).astype(np.float32)  # fractional, some negative
    inv_freq = (10000.0 ** (-np.arange(f) / f)).astype(np.float32)
    axis_map = rng.integers(0, axes, f).astype(np.int32)
    return x, positions, inv_freq, axis_map


@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("f,d", [(8, 16), (6, 16), (1, 4)])  # full and partial rotary
def test_reference_matches_literal_loop(interleaved, layout, f, d):
    rng = np.random.default_rng(interleaved * 10 + layout + f)
    attrs = RotaryAttrs(interleaved, layout, 0.75)
    x, pos, inv, amap = _inputs(rng, (2, 3, 5, d), f, 3)  # (B, n1, n2, D): layout decides which is S
    if layout == 1:
        pos = pos[:, :, :3]  # S is axis 1 in (B, S, H, D)
    want = _loop_reference(x, pos, inv, amap, attrs)
    np.testing.assert_allclose(VideoRope(x, pos, inv, amap, attrs), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-6), (torch.float16, 4e-3), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("interleaved", [0, 1])
def test_torch_op_matches_reference(dtype, tol, interleaved):
    rng = np.random.default_rng(1)
    attrs = RotaryAttrs(interleaved, 0, 1.0)
    x, pos, inv, amap = _inputs(rng, (2, 4, 7, 32), 12, 4)
    want = VideoRope(x, pos, inv, amap, attrs)
    got = apply(torch.from_numpy(x).to(dtype), *map(torch.from_numpy, (pos, inv, amap)), attrs)
    assert got.dtype == dtype and got.shape == x.shape
    np.testing.assert_allclose(got.float().numpy(), want, rtol=tol, atol=tol)


def test_torch_op_gradient_is_inverse_rotation():
    rng = np.random.default_rng(2)
    x, pos, inv, amap = _inputs(rng, (1, 2, 3, 8), 4, 3)
    xt = torch.from_numpy(x).double().requires_grad_()
    args = [torch.from_numpy(a) for a in (pos, inv, amap)]
    assert torch.autograd.gradcheck(lambda t: apply(t, *args), (xt,), eps=1e-6, atol=1e-4)


def test_torch_op_traces_as_one_node():
    x = torch.randn(1, 2, 3, 8)
    pos, inv, amap = torch.rand(3, 1, 3), torch.rand(4), torch.zeros(4, dtype=torch.int32)
    graph = torch.export.export(_Wrap(), (x, pos, inv, amap)).graph
    targets = [n.target for n in graph.nodes if n.op == "call_function"]
    assert targets == [torch.ops.videorope.VideoRope.default]


class _Wrap(torch.nn.Module):
    def forward(self, x, pos, inv, amap):
        return apply(x, pos, inv, amap)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(shape=(2, 3, 5)), "must be 4-D"),
        (dict(pos_shape=(5, 2, 5)), "1 <= A <= 4"),
        (dict(pos_shape=(3, 1, 5)), "does not match"),
        (dict(f=9), "expected 1..8"),
        (dict(axis=3), r"axis_map values must be in \[0, 3\)"),
    ],
)
def test_bad_inputs_say_what_was_expected(kwargs, message):
    x = np.zeros(kwargs.get("shape", (2, 3, 5, 16)), np.float32)
    pos = np.zeros(kwargs.get("pos_shape", (3, 2, 5)), np.float32)
    f = kwargs.get("f", 8)
    amap = np.full(f, kwargs.get("axis", 0), np.int32)
    with pytest.raises(ValueError, match=message):
        VideoRope(x, pos, np.ones(f, np.float32), amap)


@pytest.mark.parametrize("bad", [dict(interleaved=2), dict(layout=5), dict(scale=float("nan")), dict(scale=0.0)])
def test_bad_attributes(bad):
    with pytest.raises(ValueError, match="VideoRope"):
        RotaryAttrs(**bad)


def test_onnx_attributes_cover_declared_plugin_fields():
    attrs = RotaryAttrs().onnx_attributes()
    assert {name for name, _ in VIDEO_ROPE.fields} | {"plugin_namespace", "plugin_version"} == set(attrs)
    assert attrs["plugin_namespace"] == "videorope" and attrs["plugin_version"] == "1"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_torch_op_runs_inside_a_cuda_graph_capture():
    # Capture forbids device→host reads: the op must not read axis_map's values back when it lives on the GPU.
    rng = np.random.default_rng(3)
    x, pos, inv, amap = _inputs(rng, (1, 2, 4, 16), 8, 3)
    want = VideoRope(x, pos, inv, amap)
    args = [torch.from_numpy(a).cuda() for a in (x, pos, inv, amap)]
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = apply(*args)
    graph.replay()
    torch.cuda.synchronize()
    np.testing.assert_allclose(out.cpu().numpy(), want, rtol=2e-6, atol=2e-6)
