"""The decode step's one-row matrix products (`runtime/backends/gemv.py`) against an fp64 product."""

import pytest
import torch
import torch.nn.functional as F

from videorope_trt.runtime.backends import gemv


def _rel(a, b):
    return float((a.double() - b).norm() / b.norm())


def test_linear_is_f_linear_where_gemv_does_not_apply():
    """CPU tensors, fp32 and several rows all go to F.linear unchanged (bit for bit)."""
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(24, 40, generator=g), torch.randn(24, generator=g)
    for x in (torch.randn(1, 40, generator=g), torch.randn(3, 40, generator=g)):
        assert not gemv.usable(x, w)
        assert torch.equal(gemv.linear(x, w, b), F.linear(x, w, b))


def test_gemv_refuses_what_it_cannot_take():
    with pytest.raises(ValueError, match=r"one fp16/bf16 CUDA row of length 40.*x \(2, 40\) torch.float32"):
        gemv.gemv(torch.zeros(2, 40), torch.zeros(24, 40))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("n,k,bias", [(2048, 1536, True), (1536, 8960, False), (1000, 1000, False), (7, 4104, True)])
def test_gemv_matches_fp64_product(dtype, n, k, bias):
    """As close to the exact product as cuBLAS is (both accumulate in fp32 and round once to the dtype)."""
    if not gemv.available():
        pytest.skip("needs a CUDA GPU and Triton")
    g = torch.Generator(device="cuda").manual_seed(n + k)
    w = (torch.randn(n, k, device="cuda", generator=g) * 0.02).to(dtype)
    b = torch.randn(n, device="cuda", generator=g).to(dtype) if bias else None
    x = torch.randn(1, 1, k, device="cuda", generator=g).to(dtype)  # (B, S, K) as the decode step passes it
    ref = F.linear(x.double(), w.double(), None if b is None else b.double())
    got = gemv.linear(x, w, b)
    assert got.shape == (1, 1, n) and got.dtype == dtype
    cublas = _rel(F.linear(x, w, b), ref)
    assert _rel(got, ref) <= max(2 * cublas, 4e-3 if dtype == torch.bfloat16 else 5e-4), (_rel(got, ref), cublas)
