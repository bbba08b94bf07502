"""The decode step's one-kernel MLP (`fused_mlp`) and the deferred sum it leaves (`gemv`'s `x_add` and
`residual_add`, `rope_cache`'s `x_add`): the torch forms against the unfused composition on the CPU, the kernels
against them and an fp64 product on a GPU."""

import pytest
import torch

from videorope_trt.runtime.backends import fused_mlp, gemv, rope_cache
from videorope_trt.runtime.backends.gemv import add_rounded


def _case(k: int, n: int, device, dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed + k + n)
    x = torch.randn(1, 1, k, generator=g).to(device, dtype)
    gate_up = (torch.randn(2 * n, k, generator=g) / k**0.5).to(device, dtype)
    down = (torch.randn(k, n, generator=g) / n**0.5).to(device, dtype)
    norm = (torch.rand(k, generator=g) + 0.5).to(device, dtype)
    return x, gate_up, down, norm


def test_mlp_reference_is_the_unfused_composition():
    """x + mlp (the sum added and rounded where x is next read) is the unfused pair of products with the residual."""
    for dtype in (torch.float32, torch.bfloat16):
        x, gate_up, down, norm = _case(48, 80, "cpu", dtype)
        acc = fused_mlp.mlp_reference(x, gate_up, down, norm, 1e-6, torch.zeros(48))
        h = gemv.gemv_reference(x, gate_up, norm=norm, eps=1e-6, swiglu=True)
        assert torch.equal(add_rounded(x, acc), gemv.gemv_reference(h, down, residual=x))
        # into a sum that already holds something: added, not overwritten
        again = fused_mlp.mlp_reference(x, gate_up, down, norm, 1e-6, acc.clone())
        torch.testing.assert_close(again, 2 * acc, atol=1e-6, rtol=1e-6)


def test_mlp_refuses_shapes_it_cannot_index():
    x, gate_up, down, norm = _case(48, 80, "cpu", torch.float32)
    with pytest.raises(ValueError, match=r"got gate/up \(160, 48\), down \(80, 48\)"):
        fused_mlp.mlp_reference(x, gate_up, down.T.contiguous(), norm, 1e-6, torch.zeros(48))
    with pytest.raises(ValueError, match=r"the sum as \(48,\) fp32 on cpu; got \(48,\) torch.bfloat16"):
        fused_mlp.mlp_reference(x, gate_up, down, norm, 1e-6, torch.zeros(48, dtype=torch.bfloat16))


def test_gemv_reference_adds_the_deferred_sums_rounded_once():
    g = torch.Generator().manual_seed(4)
    x, w = torch.randn(1, 1, 40, generator=g).bfloat16(), torch.randn(40, 40, generator=g).bfloat16()
    a, r, ra = torch.randn(40, generator=g), torch.randn(1, 1, 40, generator=g).bfloat16(), torch.randn(40, generator=g)
    want = gemv.gemv_reference(add_rounded(x, a), w, residual=add_rounded(r, ra))
    assert torch.equal(gemv.gemv_reference(x, w, x_add=a, residual=r, residual_add=ra), want)
    assert add_rounded(x, None) is x
    with pytest.raises(ValueError, match="residual_add is added to the residual; got no residual"):
        gemv.gemv_reference(x, w, residual_add=ra)
    with pytest.raises(ValueError, match=r"x_add must be fp32 \(a sum not yet rounded\); got torch.bfloat16"):
        gemv.gemv_reference(x, w, x_add=a.bfloat16())
    with pytest.raises(ValueError, match=r"x_add must hold 40 values for weight \(40, 40\); got shape \(39,\)"):
        gemv.gemv_reference(x, w, x_add=a[:39])


def _gpu(pdl: bool = False):
    if not gemv.available():
        pytest.skip("needs a CUDA GPU and Triton")
    if pdl and not gemv.pdl_supported():
        pytest.skip("programmatic dependent launch needs compute capability 9.0+")


@pytest.mark.gpu
@pytest.mark.parametrize("pdl", [False, True], ids=["plain", "pdl"])
@pytest.mark.parametrize("k,n", [(1536, 8960), (3584, 18944), (200, 300)], ids=["2b", "7b", "odd"])
def test_mlp_kernel_matches_fp64(k, n, pdl):
    """bf16 weights: the sum within one bf16 rounding of h of the fp64 result, and two calls add up."""
    _gpu(pdl)
    x, gate_up, down, norm = _case(k, n, "cuda", torch.bfloat16)
    acc = fused_mlp.mlp(x, gate_up, down, norm, 1e-6, torch.zeros(k, device="cuda"), pdl=pdl)
    exact = fused_mlp.mlp_reference(x.double(), gate_up.double(), down.double(), norm.double(), 1e-6,
                                    torch.zeros(k, dtype=torch.float64, device="cuda"))
    assert float((acc.double() - exact).norm() / exact.norm()) < 4e-3
    torch.testing.assert_close(fused_mlp.mlp(x, gate_up, down, norm, 1e-6, acc.clone(), pdl=pdl), 2 * acc,
                               atol=1e-4, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("pdl", [False, True], ids=["plain", "pdl"])
def test_kernels_add_the_deferred_sum_as_the_rounded_input(pdl):
    """`gemv` and `project_into_cache` with x_add / residual_add give what they give on the sums rounded first."""
    _gpu(pdl)
    g = torch.Generator(device="cuda").manual_seed(9)
    dt, k = torch.bfloat16, 1536
    x, r = torch.randn(1, 1, k, device="cuda", generator=g).to(dt), torch.randn(1, 1, k, device="cuda", generator=g).to(dt)
    a, ra = torch.randn(k, device="cuda", generator=g), torch.randn(k, device="cuda", generator=g)
    w = (torch.randn(k, k, device="cuda", generator=g) / k**0.5).to(dt)
    norm = (torch.rand(k, device="cuda", generator=g) + 0.5).to(dt)
    got = gemv.gemv(x, w, norm=norm, eps=1e-6, residual=r, x_add=a, residual_add=ra, pdl=pdl)
    want = gemv.gemv(add_rounded(x, a), w, norm=norm, eps=1e-6, residual=add_rounded(r, ra), pdl=pdl)
    torch.testing.assert_close(got, want, atol=2e-2, rtol=8e-3)  # one bf16 rounding apart at most
    wqkv = (torch.randn((12 + 4) * 128, k, device="cuda", generator=g) / k**0.5).to(dt)
    keys = [torch.zeros(1, 2, 256, 128, device="cuda", dtype=dt) for _ in range(4)]
    rope = (torch.full((3, 1, 1), 17.5, device="cuda"), 1.0 / 10000 ** (torch.arange(64, device="cuda") / 64),
            torch.zeros(64, dtype=torch.int64, device="cuda"))
    from videorope_trt.plugins.contract import RotaryAttrs

    cpos = torch.tensor([5], device="cuda")
    q = rope_cache.project_into_cache(x, wqkv, None, norm, 1e-6, *rope, RotaryAttrs(), keys[0], keys[1], cpos, 12,
                                      pdl=pdl, x_add=a)
    q_want = rope_cache.project_into_cache(add_rounded(x, a), wqkv, None, norm, 1e-6, *rope, RotaryAttrs(), keys[2],
                                           keys[3], cpos, 12, pdl=pdl)
    torch.testing.assert_close(q, q_want, atol=2e-2, rtol=8e-3)
    torch.testing.assert_close(keys[0], keys[2], atol=2e-2, rtol=8e-3)
    torch.testing.assert_close(keys[1], keys[3], atol=2e-2, rtol=8e-3)
