"""Prefill attention split into (earlier rows, the chunk itself) and merged by log-sum-exp, against one softmax."""

import pytest
import torch

from videorope_trt.runtime.kernels.prefill_attention import merge_partials, split_causal_attention


def _math_partial(q, k, v, causal: bool, scale: float):
    """(output, lse) written out: grouped-query heads repeated, causal aligned to the last key."""
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, 1).double(), v.repeat_interleave(g, 1).double()
    scores = q.double() @ k.transpose(-1, -2) * scale
    if causal:
        s, n = q.shape[2], k.shape[2]
        scores = scores.masked_fill(torch.arange(n)[None, :] > torch.arange(s)[:, None] + (n - s), float("-inf"))
    lse = torch.logsumexp(scores, -1)
    return torch.softmax(scores, -1) @ v, lse


def _reference(q, k, v, scale):
    return _math_partial(q, k, v, True, scale)[0]


@pytest.mark.parametrize("past,s", [(0, 5), (1, 5), (37, 16), (64, 1)])
def test_split_equals_one_causal_softmax(past, s):
    g = torch.Generator().manual_seed(past + s)
    q = torch.randn(2, 6, s, 16, generator=g)
    k, v = (torch.randn(2, 2, past + s, 16, generator=g) for _ in range(2))
    got = split_causal_attention(q.double(), k.double(), v.double(), 0.25, partial=_math_partial)
    # the merge runs in fp32 (as on the GPU), the partials here in fp64
    torch.testing.assert_close(got, _reference(q, k, v, 0.25), rtol=2e-5, atol=2e-6)


def test_split_takes_a_compiled_merge():
    """The decoder hands in `merge_partials` compiled (`compile=True`): the same output."""
    g = torch.Generator().manual_seed(9)
    q = torch.randn(1, 4, 8, 16, generator=g)
    k, v = (torch.randn(1, 2, 40, 16, generator=g) for _ in range(2))
    merge = torch.compile(merge_partials, dynamic=None)
    got = split_causal_attention(q, k, v, 0.25, partial=_math_partial, merge=merge)
    torch.testing.assert_close(got, split_causal_attention(q, k, v, 0.25, partial=_math_partial), rtol=1e-5, atol=1e-6)
    assert got.dtype == q.dtype and got.transpose(1, 2).is_contiguous()  # token-major: o_proj reads it as it is


def test_merge_partials_weights_by_lse():
    """Two halves of the keys: each partial softmax re-weighted by its share of the total mass."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 1, 3, 8, generator=g)
    k, v = torch.randn(1, 1, 10, 8, generator=g), torch.randn(1, 1, 10, 8, generator=g)
    a = _math_partial(q, k[:, :, :4], v[:, :, :4], False, 1.0)
    b = _math_partial(q, k[:, :, 4:], v[:, :, 4:], False, 1.0)
    whole = _math_partial(q, k, v, False, 1.0)[0]
    torch.testing.assert_close(merge_partials(a[0], a[1], b[0], b[1]).double(), whole, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(merge_partials(a[0], a[1][..., None], b[0], b[1][..., None]).double(), whole,
                               rtol=1e-6, atol=1e-6)  # lse given as (B, H, S, 1), as some kernels return it
    half = merge_partials(a[0].float(), a[1], b[0].float(), b[1], torch.bfloat16)
    assert half.dtype == torch.bfloat16 and half.shape == whole.shape and half.transpose(1, 2).is_contiguous()
    torch.testing.assert_close(half.double(), whole, rtol=8e-3, atol=8e-3)  # one bf16 rounding


@pytest.mark.gpu
@pytest.mark.parametrize("hq,kv", [(12, 2), (28, 4)], ids=["2b", "7b"])
def test_cudnn_split_matches_sdpa_on_gpu(hq, kv):
    """bf16 on the GPU: as close to the fp64 softmax as SDPA's own causal-lower-right form is."""
    from torch.nn.attention.bias import causal_lower_right

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    g = torch.Generator(device="cuda").manual_seed(hq)
    q = torch.randn(1, hq, 256, 128, device="cuda", generator=g).to(torch.bfloat16)
    k, v = (torch.randn(1, kv, 1024, 128, device="cuda", generator=g).to(torch.bfloat16) for _ in range(2))
    scale = 128**-0.5
    ref = _reference(q.cpu(), k.cpu(), v.cpu(), scale).cuda()
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(256, 1024),
                                                            scale=scale, enable_gqa=True)
    err = lambda x: float((x.double() - ref).norm() / ref.norm())
    token_major = q.transpose(1, 2).contiguous().transpose(1, 2)  # the projection's layout, as the decoder gives it
    merge = torch.compile(merge_partials, dynamic=None)
    for query, kw in ((q, {}), (token_major, {}), (token_major, {"merge": merge})):
        got = split_causal_attention(query, k, v, scale, **kw)
        assert got.dtype == torch.bfloat16 and got.shape == q.shape
        assert err(got) <= 1.5 * err(sdpa) + 1e-3, (err(got), err(sdpa))
    assert got.transpose(1, 2).is_contiguous()  # the compiled merge writes it token-major
