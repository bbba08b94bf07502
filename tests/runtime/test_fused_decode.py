"""The fused decode step (`static_decoder.DecodeOps`, `StaticCacheDecoder._decode_fused`): its torch form against the
model's own decoder on the CPU; its Triton kernels (`gemv.gemv` with norm / SwiGLU / residual,
`rope_cache.project_into_cache`) against that torch form and an fp64 product on a GPU, with and without
programmatic dependent launch."""

from collections import Counter
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from videorope_trt.models.decoder import rms_norm
from videorope_trt.rope.apply import video_rope_torch
from videorope_trt.rope.contract import RotaryAttrs
from videorope_trt.runtime.backends.torch.decode_graph import GraphedDecode
from videorope_trt.runtime.backends.torch.static_decoder import DecodeOps, swiglu
from videorope_trt.runtime.kernels import gemv, rope_cache


def _counted(ops: DecodeOps, calls: Counter) -> DecodeOps:
    def count(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapped

    return replace(ops, linear=count("linear", ops.linear),
                   project_into_cache=count("project_into_cache", ops.project_into_cache))


def _backends(tiny_ckpt, ops):
    from videorope_trt.runtime.backends.torch.backend import TorchBackend, TorchOptions

    ref = TorchBackend.load(tiny_ckpt, TorchOptions(device="cpu", reference=True))
    fast = TorchBackend(ref.model, ref.info, TorchOptions(device="cpu"))
    fast.decode_ops = ops  # the CPU has no Triton: the fused step's torch form, injected
    return fast, ref


def test_fused_step_in_torch_matches_the_model_decoder(tiny_ckpt):
    """Prefill, then decode steps through the fused layer loop (the graphed step run eagerly, positions moving
    by rope_deltas): the same logits as the reference path, and every layer took the fused ops."""
    calls = Counter()
    fast, ref = _backends(tiny_ckpt, _counted(DecodeOps.reference(), calls))
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(100, 400, (1, 10), generator=g)
    pos = (torch.arange(10, dtype=torch.float32) * 0.5).expand(3, 1, 10).contiguous()  # fractional, as VideoRoPE
    mask = torch.ones(1, 10, dtype=torch.int64)
    full = torch.ones(1, 16, dtype=torch.int64)
    offset = torch.tensor([4.0, -2.0, 1.5]).view(3, 1, 1)
    for be in (fast, ref):
        be.allocate(1, 16)
        be.forward(be.embed(ids), pos, mask)
    assert fast.fast.decode_ops is not None and calls["linear"] == 0  # prefill never takes the one-token path
    step = GraphedDecode(fast.fast, 1, 3, capture=False)
    step.begin(full, offset, 1.0, 10)
    ref.begin_decode(full, offset, 1.0)
    tok = torch.tensor([7])
    layers = ref.info.num_layers
    for n in range(1, 5):
        a, b = step(tok), ref.decode_step(tok)
        torch.testing.assert_close(a, b, atol=3e-5, rtol=1e-5)
        assert calls["linear"] == n * (3 * layers + 1) and calls["project_into_cache"] == n * layers
        tok = a.argmax(-1)


def test_fused_step_is_taken_only_where_it_applies(tiny_ckpt):
    from videorope_trt.runtime.backends.torch.static_decoder import StaticCacheDecoder

    fast, _ = _backends(tiny_ckpt, DecodeOps.reference())
    fast.allocate(2, 16)
    assert fast.fast.decode_ops is None  # batch 2: the layer-by-layer step
    fast.allocate(1, 16)
    assert fast.fast.decode_ops is not None
    model = fast.model
    # the Triton kernels: fp16/bf16 on CUDA only, so on this CPU model in fp32 the decoder keeps its own step
    triton_like = replace(DecodeOps.reference(), cuda_half_only=True)
    assert not triton_like.supports(torch.float32, torch.device("cpu"))
    assert not triton_like.supports(torch.float32, torch.device("cuda"))
    assert triton_like.supports(torch.bfloat16, torch.device("cuda"))
    assert StaticCacheDecoder(model, 1, 16, decode_ops=triton_like).decode_ops is None
    assert DecodeOps.reference().supports(torch.float32, torch.device("cpu"))
    up = model.text_model.layers[0].mlp.up_proj
    up.bias = torch.nn.Parameter(torch.zeros(up.out_features))  # a bias the fused step would not fold
    try:
        assert StaticCacheDecoder(model, 1, 16, decode_ops=DecodeOps.reference()).decode_ops is None
    finally:
        up.bias = None


def test_fused_step_takes_integer_positions(tiny_ckpt):
    """`forward` with one token may be handed positions of another dtype: the rotation reads them as fp32."""
    fast, ref = _backends(tiny_ckpt, DecodeOps.reference())
    ids = torch.randint(100, 400, (1, 6), generator=torch.Generator().manual_seed(1))
    pos = torch.arange(6).expand(3, 1, 6).contiguous()
    for be in (fast, ref):
        be.allocate(1, 8)
        be.forward(be.embed(ids[:, :5]), pos[:, :, :5].float(), torch.ones(1, 5, dtype=torch.int64))
    a = fast.forward(fast.embed(ids[:, 5:]), pos[:, :, 5:], torch.ones(1, 6, dtype=torch.int64))
    b = ref.forward(ref.embed(ids[:, 5:]), pos[:, :, 5:].float(), torch.ones(1, 6, dtype=torch.int64))
    torch.testing.assert_close(a, b, atol=3e-5, rtol=1e-5)


@pytest.mark.parametrize("norm,act,residual", [(False, False, False), (True, False, False), (True, True, False),
                                               (False, False, True)])
def test_gemv_reference_is_the_unfused_composition(norm, act, residual):
    """The torch form of the fused product is the decoder's own norm / linear / SwiGLU / add, in fp32."""
    g = torch.Generator().manual_seed(5)
    x, w = torch.randn(1, 1, 48, generator=g), torch.randn(64, 48, generator=g)
    b, gamma, r = torch.randn(64, generator=g), torch.rand(48, generator=g) + 0.5, torch.randn(1, 1, 32 if act else 64)
    h = rms_norm(x, gamma, 1e-6) if norm else x
    want = F.linear(h, w, b)
    want = swiglu(*want.chunk(2, dim=-1)) if act else want
    want = want + r if residual else want
    got = gemv.gemv_reference(x, w, b, norm=gamma if norm else None, eps=1e-6, swiglu=act,
                              residual=r if residual else None)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_gemv_reference_all_epilogues_at_once():
    g = torch.Generator().manual_seed(6)
    x, w, b = torch.randn(1, 1, 40, generator=g), torch.randn(32, 40, generator=g), torch.randn(32, generator=g)
    gamma, r = torch.rand(40, generator=g) + 0.5, torch.randn(1, 1, 16, generator=g)
    want = swiglu(*F.linear(rms_norm(x, gamma, 1e-5), w, b).chunk(2, dim=-1)) + r
    got = gemv.gemv_reference(x, w, b, norm=gamma, eps=1e-5, swiglu=True, residual=r)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kwargs,match", [
    ({"swiglu": True, "weight": torch.zeros(7, 8)}, "even number of rows"),
    ({"bias": torch.zeros(5)}, r"bias must hold 6 values for weight \(6, 8\); got shape \(5,\)"),
    ({"norm": torch.zeros(6)}, r"norm must hold 8 values"),
    ({"residual": torch.zeros(1, 1, 6), "swiglu": True},
     r"residual must hold 3 values for weight \(6, 8\) with swiglu"),
])
def test_gemv_refuses_epilogue_tensors_of_the_wrong_length(kwargs, match):
    kwargs = {"weight": torch.zeros(6, 8), **kwargs}
    with pytest.raises(ValueError, match=match):
        gemv.gemv_reference(torch.zeros(1, 1, 8), **kwargs)


def _rope_case(interleaved: int, freqs: int, device="cpu", dtype=torch.float32, scale=1.0, d=64,
               at=(7.5, 3.0, 12.25)):
    g = torch.Generator().manual_seed(11 + interleaved + freqs)
    hq, kv, rows = 4, 2, 24
    qkv = torch.randn(1, 1, (hq + 2 * kv) * d, generator=g).to(device, dtype)
    positions = torch.tensor(at).view(3, 1, 1).to(device)
    inv_freq = (1.0 / 10000 ** (torch.arange(freqs) / freqs)).to(device)  # the first is 1: angle = position
    axis_map = torch.randint(0, 3, (freqs,), generator=g).to(device)
    attrs = RotaryAttrs(interleaved=interleaved, scale=scale)
    keys, values = (torch.zeros(1, kv, rows, d, dtype=dtype, device=device) for _ in range(2))
    return qkv, positions, inv_freq, axis_map, attrs, keys, values, torch.tensor([9], device=device), hq


@pytest.mark.parametrize("interleaved,freqs", [(0, 32), (1, 32), (0, 24), (1, 20)])
def test_rope_cache_reference_is_the_rotation_and_two_cache_writes(interleaved, freqs):
    qkv, positions, inv_freq, axis_map, attrs, keys, values, at, hq = _rope_case(interleaved, freqs)
    q = rope_cache.rotate_into_cache_reference(qkv, positions, inv_freq, axis_map, attrs, keys, values, at, hq)
    heads = qkv.view(1, 1, -1, 64).transpose(1, 2)  # (B, H, S, D)
    rot = video_rope_torch(heads, positions, inv_freq, axis_map, attrs)
    torch.testing.assert_close(q, rot[:, :hq], atol=0, rtol=0)
    torch.testing.assert_close(keys[:, :, 9:10], rot[:, hq : hq + 2], atol=0, rtol=0)
    torch.testing.assert_close(values[:, :, 9:10], heads[:, hq + 2 :], atol=0, rtol=0)
    assert not keys[:, :, :9].any() and not values[:, :, 10:].any()  # no other row touched


def test_rope_cache_refuses_what_it_cannot_index():
    qkv, positions, inv_freq, axis_map, attrs, keys, values, at, hq = _rope_case(0, 32)
    call = rope_cache.rotate_into_cache_reference
    with pytest.raises(ValueError, match="one token"):
        call(qkv.expand(1, 2, -1), positions, inv_freq, axis_map, attrs, keys, values, at, hq)
    with pytest.raises(ValueError, match="one token"):
        call(qkv, positions.expand(3, 2, 1), inv_freq, axis_map, attrs, keys, values, at, hq)
    with pytest.raises(ValueError, match="expected 1..32 frequencies for head dim 64, got 40"):
        call(qkv, positions, torch.ones(40), torch.zeros(40, dtype=torch.int64), attrs, keys, values, at, hq)
    with pytest.raises(ValueError, match="contiguous key and value caches"):
        call(qkv, positions, inv_freq, axis_map, attrs, keys, values.transpose(2, 3).contiguous().transpose(2, 3),
             at, hq)
    with pytest.raises(ValueError, match="cache position as one int64"):
        call(qkv, positions, inv_freq, axis_map, attrs, keys, values, at.int(), hq)


# -- the Triton kernels (a CUDA GPU) -------------------------------------------------------------------------------

def _gpu(pdl=False):
    if not gemv.available():
        pytest.skip("needs a CUDA GPU and Triton")
    if pdl and not gemv.pdl_supported():
        pytest.skip("programmatic dependent launch needs compute capability 9.0+ and a Triton that has it")


@pytest.mark.gpu
@pytest.mark.parametrize("n,k,norm,act,residual,bias,pdl", [
    (2048, 1536, True, False, False, True, False), (2048, 1536, True, True, False, False, False),
    (2048, 1536, False, False, True, False, False), (2048, 1536, True, False, False, False, True),
    (1001, 8960, True, False, False, True, False), (1002, 8960, True, True, False, False, True),
    (1001, 8960, False, False, True, False, True), (1001, 8960, False, False, False, False, False)])
def test_fused_gemv_matches_fp64(n, k, norm, act, residual, bias, pdl):
    """Within one bf16 rounding of the fp64 result (fp16 where noted), for every epilogue, with and without PDL."""
    _gpu(pdl)
    g = torch.Generator(device="cuda").manual_seed(n + k)
    dt = torch.bfloat16
    w = (torch.randn(n, k, device="cuda", generator=g) * 0.02).to(dt)
    b = torch.randn(n, device="cuda", generator=g).to(dt) if bias else None
    x = torch.randn(1, 1, k, device="cuda", generator=g).to(dt)
    gamma = (torch.rand(k, device="cuda", generator=g) + 0.5).to(dt) if norm else None
    r = torch.randn(1, 1, n // 2 if act else n, device="cuda", generator=g).to(dt) if residual else None
    kw = dict(norm=gamma, eps=1e-6, swiglu=act, residual=r)
    exact = gemv.gemv_reference(x.double(), w.double(), None if b is None else b.double(),
                                **{**kw, "norm": None if gamma is None else gamma.double(),
                                   "residual": None if r is None else r.double()})
    got = gemv.gemv(x, w, b, pdl=pdl, **kw)
    assert got.shape == exact.shape and got.dtype == dt
    err = float((got.double() - exact).norm() / exact.norm())
    assert err < 4e-3, err  # bf16 keeps 8 significant bits: one rounding is at most 2^-8 = 3.9e-3 relative


def _projection_case(interleaved: int, freqs: int, device, dtype, scale=1.0, d=64, at=(7.5, 3.0, 12.25), k=96,
                     bias=True, norm=True):
    """A token's input, a q/k/v projection of 4 + 2 x 2 heads, and the rest of `_rope_case`."""
    _, positions, inv_freq, axis_map, attrs, keys, values, cpos, hq = _rope_case(interleaved, freqs, device, dtype,
                                                                                scale, d, at)
    g = torch.Generator().manual_seed(17 + d + freqs)
    x = torch.randn(1, 1, k, generator=g).to(device, dtype)
    w = (torch.randn((hq + 4) * d, k, generator=g) / k**0.5).to(device, dtype)
    b = torch.randn((hq + 4) * d, generator=g).to(device, dtype) if bias else None
    gamma = (torch.rand(k, generator=g) + 0.5).to(device, dtype) if norm else None
    return x, w, b, gamma, 1e-6, positions, inv_freq, axis_map, attrs, keys, values, cpos, hq


def test_projection_reference_is_the_product_then_the_rotation():
    case = _projection_case(0, 24, "cpu", torch.float32)
    x, w, b, gamma, eps, positions, inv_freq, axis_map, attrs, keys, values, cpos, hq = case
    q = rope_cache.project_into_cache_reference(*case)
    qkv = F.linear(rms_norm(x, gamma, eps), w, b)
    heads = qkv.view(1, 1, -1, 64).transpose(1, 2)
    rot = video_rope_torch(heads, positions, inv_freq, axis_map, attrs)
    torch.testing.assert_close(q, rot[:, :hq], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(keys[:, :, 9:10], rot[:, hq : hq + 2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(values[:, :, 9:10], heads[:, hq + 2 :], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"got 448 q/k/v channels"):  # a projection of the wrong height
        rope_cache.project_into_cache_reference(x, w[:448], b[:448], *case[3:])


@pytest.mark.gpu
@pytest.mark.parametrize("pdl", [False, True], ids=["plain", "pdl"])
@pytest.mark.parametrize("interleaved,freqs,scale,d,at,k", [
    (0, 32, 1.0, 64, (7.5, 3.0, 12.25), 96), (1, 32, 1.0, 64, (7.5, 3.0, 12.25), 1536),
    (0, 24, 1.0, 64, (7.5, 3.0, 12.25), 1000), (1, 20, 0.5, 64, (7.5, 3.0, 12.25), 96),
    (0, 64, 1.0, 128, (7.5, 3.0, 12.25), 1536),
    (0, 64, 1.0, 128, (65531.5, 98304.25, 31000.0), 1536)])  # angles of a long video: the sine must stay accurate
def test_projection_kernel_matches_the_torch_form(pdl, interleaved, freqs, scale, d, at, k):
    """Against the torch form in fp32 on the same inputs: within one rounding of the kernel's dtype, for the query,
    the key row (rotated) and the value row (not), every other cache row untouched."""
    _gpu(pdl)
    for dt, tol in ((torch.bfloat16, dict(atol=2e-2, rtol=8e-3)), (torch.float16, dict(atol=3e-3, rtol=1e-3))):
        for bias, norm in ((True, True), (False, False)):
            got = _projection_case(interleaved, freqs, "cuda", dt, scale, d, at, k, bias, norm)
            exact = list(got)  # x, weight, bias, norm and both caches in fp32
            for i in (0, 1, 2, 3, 9, 10):
                exact[i] = None if got[i] is None else got[i].float().clone()
            q_ref = rope_cache.project_into_cache_reference(*exact)
            q = rope_cache.project_into_cache(*got, pdl=pdl)
            assert q.dtype == dt and q.shape == q_ref.shape
            torch.testing.assert_close(q.float(), q_ref, **tol)
            torch.testing.assert_close(got[9].float(), exact[9], **tol)  # keys: this token's row, nothing else
            torch.testing.assert_close(got[10].float(), exact[10], **tol)  # values
            assert not got[9][:, :, :9].any() and not got[10][:, :, 10:].any()


@pytest.mark.gpu
@pytest.mark.parametrize("pdl", [False, True], ids=["plain", "pdl"])
def test_fused_decode_on_the_gpu_matches_the_layer_by_layer_step(tiny_ckpt, pdl):
    """The CUDA-graphed fused step (Triton kernels) against the same backend's unfused step, bf16, same tokens fed."""
    _gpu(pdl)
    from videorope_trt.runtime.backends.torch.backend import TorchBackend, TorchOptions
    from videorope_trt.runtime.backends.torch.static_decoder import DecodeOps

    options = TorchOptions(device="cuda", dtype="bfloat16", compile=False)
    fused = TorchBackend.load(tiny_ckpt, options)
    fused.decode_ops = DecodeOps.triton(pdl)
    plain = TorchBackend(fused.model, fused.info, options)
    plain.decode_ops = None  # the layer-by-layer step, as batch > 1 runs it
    g = torch.Generator().manual_seed(8)
    ids = torch.randint(100, 400, (1, 540), generator=g).cuda()
    t = torch.arange(540, dtype=torch.float32, device="cuda")
    pos = torch.stack([t * 0.5, t % 24, (t * 7) % 31])[:, None].contiguous()  # three different axes
    offset = torch.tensor([300.0, 30.0, 40.0], device="cuda").view(3, 1, 1)
    full = torch.ones(1, 600, dtype=torch.int64, device="cuda")  # 768 cache rows: three attention splits
    logits = []
    for be in (fused, plain):
        be.allocate(1, 600)
        be.forward(be.embed(ids), pos, full[:, :540])
        be.begin_decode(full, offset, 1.0)
        steps = [be.decode_step(torch.tensor([5 + i], device="cuda")).clone() for i in range(6)]
        logits.append(torch.stack(steps))
    assert fused.fast.decode_ops is not None and fused.fast.decode_ops.pdl == pdl and plain.fast.decode_ops is None
    err = float((logits[0] - logits[1]).norm() / logits[1].norm())
    assert err < 2e-2, err  # two bf16 roundings of the same math
