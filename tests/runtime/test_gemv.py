"""The decode step's one-row matrix products (`runtime/kernels/gemv.py`) against an fp64 product."""

import pytest
import torch
import torch.nn.functional as F

from videorope_trt.runtime.kernels import gemv


def _rel(a, b):
    return float((a.double() - b).norm() / b.norm())


def test_linear_is_f_linear_where_gemv_does_not_apply():
    """CPU tensors, fp32 and several rows all go to F.linear unchanged (bit for bit)."""
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(24, 40, generator=g), torch.randn(24, generator=g)
    for x in (torch.randn(1, 40, generator=g), torch.randn(3, 40, generator=g)):
        assert not gemv.usable(x, w)
        assert torch.equal(gemv.OneRowLinear()(x, w, b), F.linear(x, w, b))


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
    got = gemv.gemv(x, w, b)
    assert got.shape == (1, 1, n) and got.dtype == dtype
    cublas = _rel(F.linear(x, w, b), ref)
    assert _rel(got, ref) <= max(2 * cublas, 4e-3 if dtype == torch.bfloat16 else 5e-4), (_rel(got, ref), cublas)


def test_one_row_linear_on_the_cpu_is_f_linear():
    pick = gemv.OneRowLinear()
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(1, 1, 40, generator=g), torch.randn(24, 40, generator=g)
    assert torch.equal(pick(x, w), F.linear(x, w))
    assert pick.choice == {}  # nothing timed: F.linear without asking


@pytest.mark.gpu
def test_one_row_linear_times_each_shape_once_and_stays_exact():
    if not gemv.available():
        pytest.skip("needs a CUDA GPU and Triton")
    pick = gemv.OneRowLinear()
    g = torch.Generator(device="cuda").manual_seed(2)
    w = (torch.randn(3000, 1536, device="cuda", generator=g) * 0.02).to(torch.bfloat16)
    x = torch.randn(1, 1, 1536, device="cuda", generator=g).to(torch.bfloat16)
    ref = F.linear(x.double(), w.double())
    outs = [pick(x, w) for _ in range(2)]
    assert list(pick.choice) == [(3000, 1536, "torch.bfloat16", False)]
    assert pick.choice[(3000, 1536, "torch.bfloat16", False)] in ("triton", "cublas")
    assert torch.equal(outs[0], outs[1])
    assert _rel(outs[0], ref) <= 2 * _rel(F.linear(x, w), ref) + 1e-3
    # several rows (prefill) never take the one-row path
    xs = torch.randn(1, 5, 1536, device="cuda", generator=g).to(torch.bfloat16)
    assert torch.equal(pick(xs, w), F.linear(xs, w))


def test_deep_products_take_the_step_config_in_the_decode_step_only():
    """One row per program for a product at least 4x as deep as tall (the MLP's down projection) launched in the
    decode step (pdl); the autotuner's list for everything else."""
    assert gemv.step_configs(1536, 8960, pdl=True) == gemv.step_configs(3584, 18944, pdl=True) == ((1, 1024, 4),)
    assert gemv.step_configs(1536, 8960, pdl=False) is None  # alone: what the autotuner measures is what runs
    assert gemv.step_configs(8960, 1536, pdl=True) is None and gemv.step_configs(1536, 1536, pdl=True) is None
