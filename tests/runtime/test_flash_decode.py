"""`flash_decode` (the Triton split-row decode attention) against `static_decoder.decode_attention` in fp32."""

import pytest
import torch

from videorope_trt.runtime.backends.torch.static_decoder import decode_attention, decode_bias
from videorope_trt.runtime.kernels import flash_decode


def test_supported_shapes():
    assert flash_decode.supports(12, 2, 128, 1024) and flash_decode.supports(28, 4, 128, 256)
    assert not flash_decode.supports(12, 2, 80, 1024)  # head dim
    assert not flash_decode.supports(12, 2, 128, 1000)  # rows not in whole splits
    assert not flash_decode.supports(34, 2, 128, 256)  # 17 query heads per KV head


def test_refuses_what_it_cannot_take():
    q, keys = torch.zeros(1, 4, 1, 64), torch.zeros(1, 2, 256, 64)
    assert not flash_decode.usable(q, keys)
    with pytest.raises(ValueError, match=r"got q \(1, 4, 1, 64\) torch.float32, keys \(1, 2, 256, 64\)"):
        flash_decode.flash_decode(q, keys, keys, torch.zeros(1, 1, 1, 256), 0.125)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("hq,kv,d", [(12, 2, 128), (28, 4, 128), (4, 2, 64)], ids=["2b", "7b", "tiny"])
def test_matches_torch_decode_attention(dtype, hq, kv, d):
    if not flash_decode.available():
        pytest.skip("needs a CUDA GPU and Triton")
    rows, g = 1024, torch.Generator(device="cuda").manual_seed(hq)
    q = torch.randn(2, hq, 1, d, device="cuda", generator=g).to(dtype)
    keys = torch.randn(2, kv, rows, d, device="cuda", generator=g).to(dtype)
    values = torch.randn(2, kv, rows, d, device="cuda", generator=g).to(dtype)
    allowed = torch.zeros(2, rows, dtype=torch.bool, device="cuda")
    allowed[0, 100:700] = True  # left padding, then rows past the cache position (whole splits empty)
    allowed[1, :] = True
    bias, scale = decode_bias(allowed), d**-0.5
    ref = decode_attention(q.float(), keys.float(), values.float(), bias, scale)
    got = flash_decode.flash_decode(q, keys, values, bias, scale)
    torch_err = float((decode_attention(q, keys, values, bias, scale).float() - ref).norm() / ref.norm())
    err = float((got.float() - ref).norm() / ref.norm())
    assert got.shape == q.shape and got.dtype == dtype
    assert err <= max(torch_err, 1e-3), (err, torch_err)
    # a row nothing may attend never leaks in: changing it changes nothing
    keys[0, :, 50] += 100
    assert torch.equal(flash_decode.flash_decode(q, keys, values, bias, scale), got)


@pytest.mark.gpu
@pytest.mark.parametrize("pdl", [False, True], ids=["plain", "pdl"])
def test_long_cache_combines_more_splits_than_one_pass_holds(pdl):
    """260 splits (the combine reads 256 per step): the running max carries across its steps; empty splits at
    both ends; with and without programmatic dependent launch."""
    from videorope_trt.runtime.kernels.gemv import pdl_supported

    if not flash_decode.available():
        pytest.skip("needs a CUDA GPU and Triton")
    if pdl and not pdl_supported():
        pytest.skip("programmatic dependent launch needs compute capability 9.0+")
    rows, g = 256 * 260, torch.Generator(device="cuda").manual_seed(3)
    q = torch.randn(1, 12, 1, 128, device="cuda", generator=g).to(torch.bfloat16)
    keys = torch.randn(1, 2, rows, 128, device="cuda", generator=g).to(torch.bfloat16)
    values = torch.randn(1, 2, rows, 128, device="cuda", generator=g).to(torch.bfloat16)
    keys[:, :, rows - 300] *= 4  # one row far ahead of the rest, in the combine's second step
    allowed = torch.zeros(1, rows, dtype=torch.bool, device="cuda")
    allowed[0, 600 : rows - 290] = True
    bias, scale = decode_bias(allowed), 128**-0.5
    ref = decode_attention(q.float(), keys.float(), values.float(), bias, scale)
    got = flash_decode.flash_decode(q, keys, values, bias, scale, pdl=pdl)
    torch_err = float((decode_attention(q, keys, values, bias, scale).float() - ref).norm() / ref.norm())
    assert float((got.float() - ref).norm() / ref.norm()) <= max(torch_err, 1e-3)


@pytest.mark.gpu
def test_a_query_with_nothing_to_attend_gets_zeros():
    if not flash_decode.available():
        pytest.skip("needs a CUDA GPU and Triton")
    q, keys = torch.ones(1, 4, 1, 64, device="cuda", dtype=torch.bfloat16), torch.ones(1, 2, 512, 64, device="cuda",
                                                                                       dtype=torch.bfloat16)
    bias = decode_bias(torch.zeros(1, 512, dtype=torch.bool, device="cuda"))
    assert torch.equal(flash_decode.flash_decode(q, keys, keys, bias, 0.125), torch.zeros_like(q))


@pytest.mark.gpu
@pytest.mark.parametrize("split_rows", [None, 256], ids=["step_split", "split256"])
@pytest.mark.parametrize("hq,kv,rows", [(12, 2, 1024), (28, 4, 256 * 80)], ids=["step_config", "autotuned"])
def test_first_tile_read_before_the_wait_sees_the_row_written_by_the_kernel_before(hq, kv, rows, split_rows):
    """With `cache_position`, the attention's first cache tiles are read before the programmatic launch wait, and
    the tile holding this token's row again after it: that row, written by the q/k/v kernel just before
    (`rope_cache.project_into_cache`, itself a dependent launch), counts with its new values, at a split's first
    row and in the middle of one; with the in-step config (8 programs in 256-row splits; `step_split` makes
    them 64-row ones) and the autotuner's (320 programs)."""
    from videorope_trt.rope.contract import RotaryAttrs
    from videorope_trt.runtime.kernels import rope_cache
    from videorope_trt.runtime.kernels.gemv import pdl_supported

    if not flash_decode.available() or not pdl_supported():
        pytest.skip("needs a CUDA GPU of compute capability 9.0+ and Triton")
    g = torch.Generator(device="cuda").manual_seed(5)
    d, k = 128, 256
    programs, sms = rows // 256 * kv, torch.cuda.get_device_properties(0).multi_processor_count
    assert programs <= sms if hq == 12 else programs > 2 * sms  # a step config, then the autotuner's
    inv_freq = 1.0 / 10000 ** (torch.arange(64, device="cuda") / 64)
    axis_map = torch.zeros(64, dtype=torch.int64, device="cuda")
    for at in (512, 700):
        keys = torch.randn(1, kv, rows, d, device="cuda", generator=g).to(torch.bfloat16)
        values = torch.randn(1, kv, rows, d, device="cuda", generator=g).to(torch.bfloat16)
        x = torch.randn(1, 1, k, device="cuda", generator=g).to(torch.bfloat16)
        w = (torch.randn((hq + 2 * kv) * d, k, device="cuda", generator=g) * 4 / k**0.5).to(torch.bfloat16)
        cpos = torch.tensor([at], device="cuda")
        positions = torch.full((3, 1, 1), float(at), device="cuda")
        allowed = torch.zeros(1, rows, dtype=torch.bool, device="cuda")
        allowed[0, : at + 1] = True
        bias = decode_bias(allowed)
        stale = keys[:, :, at].clone()
        q = rope_cache.project_into_cache(x, w, None, None, 0.0, positions, inv_freq, axis_map, RotaryAttrs(), keys,
                                          values, cpos, hq, pdl=True)
        got = flash_decode.flash_decode(q, keys, values, bias, d**-0.5, pdl=True, cache_position=cpos,
                                        split_rows=split_rows)
        torch.cuda.synchronize()
        assert not torch.equal(keys[:, :, at], stale)  # the row did change
        ref = decode_attention(q.float(), keys.float(), values.float(), bias, d**-0.5)
        torch_err = float((decode_attention(q, keys, values, bias, d**-0.5).float() - ref).norm() / ref.norm())
        assert float((got.float() - ref).norm() / ref.norm()) <= max(torch_err, 1e-3)


def test_partial_configs_by_programs_per_sm():
    """One config, not autotuned, for grids of one or two programs per SM that read their first tile early; the
    autotuner's list for larger grids and without the early read."""
    assert flash_decode.partial_configs(1) == ((128, 4, 3),) and flash_decode.partial_configs(2) == ((128, 4, 2),)
    assert flash_decode.partial_configs(3) == flash_decode.partial_configs(None) == flash_decode.PARTIAL_CONFIGS
    assert flash_decode.partial_configs(2, 64) == ((64, 4, 1),)  # a one-tile split in the step
    # without the early read too: the autotuner's 128-row tiles would reach into the next split
    assert flash_decode.partial_configs(None, 64) == ((64, 4, 1),)


@pytest.mark.parametrize("rows,heads,split", [
    (8448, 2, 64),  # 2B at 8k: 66 programs in 256-row splits, 264 in 64-row ones
    (16640, 2, 128),  # 2B at 16k: 130 / 260
    (33024, 2, 256),  # 2B at 32k: 258
    (33024, 4, 256),  # 7B at 32k: 516
    (1024, 2, 64),  # a short cache: the shortest split, whatever its grid
])
def test_step_split_gives_about_two_programs_per_sm(rows, heads, split):
    assert flash_decode.step_split(rows, heads, 132) == split
    assert flash_decode.step_split(rows + 64, heads, 132) == 64  # only a split that divides the rows


@pytest.mark.gpu
@pytest.mark.parametrize("split_rows,config", [(128, (128, 8, 1)), (64, (64, 4, 1)), (32, (32, 4, 1)), (64, None)])
@pytest.mark.parametrize("pdl", [False, True], ids=["plain", "pdl"])
def test_shorter_splits_match(split_rows, config, pdl):
    """One tile per program (the whole split read before the wait with `pdl`): the same attention, empty splits
    and a cache position inside a split included."""
    from videorope_trt.runtime.kernels.gemv import pdl_supported

    if not flash_decode.available() or (pdl and not pdl_supported()):
        pytest.skip("needs a CUDA GPU and Triton (with pdl: compute capability 9.0+)")
    rows, g = 2048, torch.Generator(device="cuda").manual_seed(split_rows)
    q = torch.randn(1, 12, 1, 128, device="cuda", generator=g).to(torch.bfloat16)
    keys = torch.randn(1, 2, rows, 128, device="cuda", generator=g).to(torch.bfloat16)
    values = torch.randn(1, 2, rows, 128, device="cuda", generator=g).to(torch.bfloat16)
    allowed = torch.zeros(1, rows, dtype=torch.bool, device="cuda")
    allowed[0, 70:1500] = True
    bias, scale = decode_bias(allowed), 128**-0.5
    ref = decode_attention(q.float(), keys.float(), values.float(), bias, scale)
    cpos = torch.tensor([1499], device="cuda")
    got = flash_decode.flash_decode(q, keys, values, bias, scale, pdl=pdl, cache_position=cpos if pdl else None,
                                    split_rows=split_rows, config=config)
    torch_err = float((decode_attention(q, keys, values, bias, scale).float() - ref).norm() / ref.norm())
    assert float((got.float() - ref).norm() / ref.norm()) <= max(torch_err, 1e-3)
    with pytest.raises(ValueError, match="split_rows must be a power of two"):
        flash_decode.flash_decode(q, keys, values, bias, scale, split_rows=48)
