"""`VideoRopeCache` on the CPU: the numpy reference against an independent torch computation (the VideoRope torch op
plus index writes), the torch op and the ONNX Runtime op against the reference, rows the contract does not write
left bit for bit, rows outside the cache skipped, and errors that name what was received and expected."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from videorope_trt.plugins import ort_op, torch_op
from videorope_trt.plugins.reference import VideoRopeCache
from videorope_trt.rope.contract import VIDEO_ROPE_CACHE, RotaryAttrs

#: |error| limits against the float64 reference, values ~N(0, 1): fp32 rounds the angle's cos/sin and one product;
#: fp16 (the torch op rotates in fp16, as transformers) a few units in the last place at |x| up to ~5.
ATOL = {torch.float32: 1e-5, torch.float16: 2e-2, torch.bfloat16: 1e-1}

CASES = [  # (attrs, F, offsets): every pairing and layout, partial rotary, offsets in, at and past both ends
    (RotaryAttrs(0, 0, 1.0), 4, (0, 3)),
    (RotaryAttrs(1, 0, 0.8), 3, (-2, 9)),
    (RotaryAttrs(0, 1, 1.0), 2, (5, -7)),
    (RotaryAttrs(1, 1, 1.3), 4, (11, 1)),
]


def make(attrs, f, offsets, s=4, hq=3, kv=2, d=8, c=12, a=3, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    b = len(offsets)

    def shaped(h):
        return (b, h, s, d) if attrs.layout == 0 else (b, s, h, d)

    return dict(q=rng.standard_normal(shaped(hq)).astype(dtype), k=rng.standard_normal(shaped(kv)).astype(dtype),
                v=rng.standard_normal(shaped(kv)).astype(dtype),
                positions=(rng.random((a, b, s)) * 500).astype(np.float32),
                inv_freq=(1e4 ** (-np.arange(f) / f)).astype(np.float32),
                axis_map=rng.integers(0, a, f).astype(np.int32),
                k_cache=rng.standard_normal((b, kv, c, d)).astype(dtype),
                v_cache=rng.standard_normal((b, kv, c, d)).astype(dtype),
                write_offset=np.asarray(offsets, dtype=np.int32))


def torch_index_writes(t: dict, attrs):
    """The contract in torch, written independently: VideoRope op on q and k, then one index_copy_ per sequence."""
    q_rot = torch_op.apply(t["q"], t["positions"], t["inv_freq"], t["axis_map"], attrs)
    k_rot = torch_op.apply(t["k"], t["positions"], t["inv_freq"], t["axis_map"], attrs)
    v = t["v"]
    if attrs.layout == 1:
        k_rot, v = k_rot.transpose(1, 2), v.transpose(1, 2)
    k_out, v_out = t["k_cache"].clone(), t["v_cache"].clone()
    seq, cap = k_rot.shape[2], k_out.shape[2]
    for b, off in enumerate(t["write_offset"].tolist()):
        tokens = [s for s in range(seq) if 0 <= off + s < cap]
        rows = torch.tensor([off + s for s in tokens], dtype=torch.long)
        src = torch.tensor(tokens, dtype=torch.long)
        k_out[b].index_copy_(1, rows, k_rot[b].index_select(1, src))
        v_out[b].index_copy_(1, rows, v[b].index_select(1, src))
    return q_rot, k_out, v_out


def written(offsets, s, c) -> np.ndarray:
    rel = np.arange(c)[None] - np.asarray(offsets)[:, None]
    return (rel >= 0) & (rel < s)


@pytest.mark.parametrize("attrs,f,offsets", CASES)
def test_reference_equals_torch_op_plus_index_writes(attrs, f, offsets):
    arrays = make(attrs, f, offsets)
    ref = VideoRopeCache(*arrays.values(), attrs)
    other = torch_index_writes({n: torch.from_numpy(a) for n, a in arrays.items()}, attrs)
    # the torch op takes cos/sin in fp32 (as transformers), the reference in float64: 1e-6 at |x| ~ 3; a row written
    # to the wrong place or not at all is off by O(1)
    for r, o, name in zip(ref, other, VIDEO_ROPE_CACHE.outputs):
        np.testing.assert_allclose(r, o.numpy(), rtol=0, atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(ref[2], other[2].numpy())  # v rows: copies


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("attrs,f,offsets", CASES)
def test_torch_op_matches_reference(attrs, f, offsets, dtype):
    arrays = make(attrs, f, offsets, seed=1)
    ref = VideoRopeCache(*arrays.values(), attrs)
    t = {n: torch.from_numpy(a) for n, a in arrays.items()}
    for n in ("q", "k", "v", "k_cache", "v_cache"):
        t[n] = t[n].to(dtype)
    got = torch_op.apply_cache(*t.values(), attrs)
    for g, r, name in zip(got, ref, VIDEO_ROPE_CACHE.outputs):
        assert g.dtype == dtype and tuple(g.shape) == r.shape, name
        np.testing.assert_allclose(g.double().numpy(), r, rtol=0, atol=ATOL[dtype], err_msg=name)
    # v rows are copies: exact in the dtype
    rows = written(offsets, 4, 12)
    v_src = t["v"] if attrs.layout == 0 else t["v"].transpose(1, 2)
    for b, off in enumerate(offsets):
        for s in range(4):
            if 0 <= off + s < 12:
                assert torch.equal(got[2][b, :, off + s], v_src[b, :, s])
    assert rows.sum() > 0


@pytest.mark.parametrize("impl", ["reference", "torch"])
def test_untouched_rows_are_bit_identical_and_out_of_range_rows_skipped(impl):
    attrs = RotaryAttrs(0, 1, 1.0)
    offsets = (-3, 10, 14)  # first and second partly outside, third wholly outside (C = 12)
    arrays = make(attrs, 4, offsets, dtype=np.float32)
    bits = np.full(arrays["k_cache"].shape, 0x7FA5A5A5, dtype=np.uint32)  # NaN with a payload
    arrays["k_cache"], arrays["v_cache"] = bits.view(np.float32), bits.copy().view(np.float32)
    if impl == "reference":
        out = VideoRopeCache(*arrays.values(), attrs)
    else:
        out = [o.numpy() for o in torch_op.apply_cache(*(torch.from_numpy(a) for a in arrays.values()), attrs)]
    rows = written(offsets, 4, 12)
    assert rows.sum(axis=1).tolist() == [1, 2, 0]
    for cache in out[1:]:
        by_row = cache.view(np.uint32).transpose(0, 2, 1, 3)  # (B, C, KV, D)
        assert (by_row[~rows] == 0x7FA5A5A5).all()  # every unwritten row keeps its payload
        assert not np.isnan(cache.transpose(0, 2, 1, 3)[rows]).any()


def test_inputs_are_not_modified():
    attrs = RotaryAttrs()
    arrays = make(attrs, 4, (0, 2), dtype=np.float32)
    t = {n: torch.from_numpy(a.copy()) for n, a in arrays.items()}
    torch_op.apply_cache(*t.values(), attrs)
    VideoRopeCache(*(a for a in arrays.values()), attrs)
    for n, a in arrays.items():
        np.testing.assert_array_equal(t[n].numpy(), a)


def test_ort_op_matches_reference():
    import onnx
    import onnxruntime as ort
    from onnx import helper

    attrs = RotaryAttrs(1, 1, 0.9)
    arrays = make(attrs, 3, (2, -1, 9), dtype=np.float32)
    vi = helper.make_tensor_value_info
    ins = [vi(n, onnx.helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape)) for n, a in arrays.items()]
    outs = [vi(n, onnx.TensorProto.FLOAT, None) for n in VIDEO_ROPE_CACHE.outputs]
    node = helper.make_node(VIDEO_ROPE_CACHE.name, list(arrays), list(VIDEO_ROPE_CACHE.outputs),
                            domain=VIDEO_ROPE_CACHE.domain, **attrs.onnx_attributes())
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid(VIDEO_ROPE_CACHE.domain, 1)]
    model = helper.make_model(helper.make_graph([node], "g", ins, outs), opset_imports=opsets)
    sess = ort.InferenceSession(model.SerializeToString(), ort_op.session_options(), providers=["CPUExecutionProvider"])
    got = sess.run(None, arrays)
    ref = VideoRopeCache(*arrays.values(), attrs)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(got[2], ref[2])  # values are copied


BAD = [  # (what to change, expected message)
    (lambda a: a.update(k=a["k"][:, :, :3]), r"k \(2, 2, 3, 8\) must share B=2, S=4, D=8 with q"),
    (lambda a: a.update(v=a["v"][:, :1]), r"v must have k's shape \(2, 2, 4, 8\), got \(2, 1, 4, 8\)"),
    (lambda a: a.update(k_cache=a["k_cache"][:, :1]),
     r"must both be \(B, KV, C, D\) = \(2, 2, C, 8\), got \(2, 1, 12, 8\)"),
    (lambda a: a.update(v_cache=a["v_cache"][..., :4]), r"got \(2, 2, 12, 8\) and \(2, 2, 12, 4\)"),
    (lambda a: a.update(k_cache=a["k_cache"][0]), r"k_cache must be 4-D, got shape \(2, 12, 8\)"),
    (lambda a: a.update(write_offset=a["write_offset"][:1]), r"write_offset must be \(2,\) .*got \(1,\)"),
    (lambda a: a.update(write_offset=a["write_offset"].astype(np.int64)),
     r"write_offset must be int32, got (torch\.)?int64"),
    (lambda a: a.update(v_cache=a["v_cache"].astype(np.float16)),
     r"share one dtype; q is (torch\.)?float32, got \{'v_cache'"),
    (lambda a: a.update(positions=a["positions"][:, :, :2]), r"positions .* does not match x's B=2, S=4"),
]


@pytest.mark.parametrize("change,message", BAD)
def test_bad_inputs_are_named(change, message):
    arrays = make(RotaryAttrs(), 4, (0, 1), dtype=np.float32)
    change(arrays)
    with pytest.raises(ValueError, match=message):
        VideoRopeCache(*arrays.values())
    with pytest.raises(ValueError, match=message):
        torch_op.apply_cache(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays.values()))


def test_fake_implementation_traces_with_torch_export():
    """The op stays opaque to torch.export (its fake implementation gives the output shapes): what the ONNX exporter
    needs."""

    class Step(torch.nn.Module):
        def forward(self, q, k, v, positions, inv_freq, axis_map, k_cache, v_cache, write_offset):
            return torch_op.apply_cache(q, k, v, positions, inv_freq, axis_map, k_cache, v_cache, write_offset)

    args = tuple(torch.from_numpy(a) for a in make(RotaryAttrs(), 4, (0, 1), dtype=np.float32).values())
    prog = torch.export.export(Step(), args)
    targets = [n.target for n in prog.graph.nodes if n.op == "call_function"]
    assert torch.ops.videorope.VideoRopeCache.default in targets
    outs = prog.module()(*args)
    assert [tuple(o.shape) for o in outs] == [tuple(args[0].shape), tuple(args[6].shape), tuple(args[7].shape)]
