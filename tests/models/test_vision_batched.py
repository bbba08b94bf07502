"""The model's vision call (slices of equal size attended in one SDPA call) against transformers' stock tower,
which splits at every temporal slice and makes one SDPA call per slice and layer."""

import pytest
import torch

from videorope_trt.models import vision_attention as va

from _model_inputs import PATCH_DIM, rel_err

GRIDS = {  # (t, h, w) in patches, one row per image / video of one vision call
    "video, 5 slices": [[5, 4, 6]],
    "image": [[1, 4, 4]],
    "two images of one size": [[1, 4, 4], [1, 4, 4]],
    "image + video (unequal segments)": [[1, 4, 4], [3, 4, 6]],
    "two videos of different sizes": [[2, 6, 4], [3, 4, 4]],
}


def _pixels(grid, seed=0):
    n = sum(t * h * w for t, h, w in grid)
    return torch.randn(n, PATCH_DIM, generator=torch.Generator().manual_seed(seed))


class _CountSdpa:
    """Counts torch's SDPA calls (both paths reach it through `torch.nn.functional`)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        self.inner = torch.nn.functional.scaled_dot_product_attention
        monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)


def _runs_of(grid):
    """Runs of consecutive equal-length segments, counted the slow way (one segment per temporal slice)."""
    lengths = [h * w for t, h, w in grid for _ in range(t)]
    return 1 + sum(a != b for a, b in zip(lengths, lengths[1:]))


@pytest.mark.parametrize("name", list(GRIDS))
def test_matches_stock_tower(load_tiny, monkeypatch, name):
    model = load_tiny()
    grid = torch.tensor(GRIDS[name])
    pixels = _pixels(GRIDS[name])
    depth = len(model.visual.blocks)
    assert model.visual.config._attn_implementation == "sdpa"  # the reference is the per-slice sdpa path
    with torch.no_grad():
        sdpa = _CountSdpa(monkeypatch)
        ref = model.visual(pixels, grid_thw=grid).pooler_output
        stock_calls, sdpa.calls = sdpa.calls, 0
        out = model.vision(pixels, grid)
    assert stock_calls == depth * int(grid[:, 0].sum())
    assert sdpa.calls == depth * _runs_of(GRIDS[name])
    assert out.shape == ref.shape == (pixels.shape[0] // 4, model.config.vision_config.hidden_size)
    assert rel_err(out, ref) <= 1e-5
    assert model.visual.config._attn_implementation == "sdpa"


def test_equal_runs():
    cu = torch.tensor([0, 16, 40, 64, 88, 104, 120], dtype=torch.int32)  # 16 | 24 24 24 | 16 16
    assert va.equal_runs(cu, 24, 120) == [(0, 1, 16), (16, 3, 24), (88, 2, 16)]
    equal = torch.arange(0, 5 * 24 + 1, 24, dtype=torch.int32)
    assert va.equal_runs(equal, 24, 120) == [(0, 5, 24)]
    assert va.equal_runs(equal, None, 120) == [(0, 5, 24)]  # no longest given: read back and grouped


def test_attention_implementation_restores(load_tiny):
    config = load_tiny().visual.config
    before = config._attn_implementation
    with va.attention_implementation(config, va.BATCHED_NAME):
        assert config._attn_implementation == va.BATCHED_NAME
    assert config._attn_implementation == before
    with pytest.raises(RuntimeError, match="inside"):
        with va.attention_implementation(config, va.BATCHED_NAME):
            raise RuntimeError("inside")
    assert config._attn_implementation == before


def test_vision_restores_after_an_error(load_tiny):
    model = load_tiny()
    before = model.visual.config._attn_implementation
    with pytest.raises(RuntimeError):  # 40 patches for a grid of 48: the tower fails inside the block
        model.vision(torch.zeros(40, PATCH_DIM), torch.tensor([[2, 4, 6]]))
    assert model.visual.config._attn_implementation == before


def test_rejects_a_name_without_flash():
    with pytest.raises(ValueError, match="containing 'flash'"):
        va.register_attention("videorope_trt_batched", va.batched_slices_attention)


def test_needs_the_boundaries():
    q = torch.zeros(1, 2, 8, 4)
    with pytest.raises(ValueError, match="cu_seq_lens_q"):
        va.batched_slices_attention(None, q, q, q)
