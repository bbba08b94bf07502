"""`FusedVision` (the tower written out block by block) against transformers' stock tower on the same weights."""

import pytest
import torch

from _model_inputs import PATCH_DIM, rel_err
from videorope_trt.models.vision_tower import FusedVision, slice_ids

GRIDS = [(5, 4, 6), (1, 4, 4), (2, 6, 4)]  # (t, h, w) in patches: video, image, portrait video


def _pixels(n, seed=0):
    return torch.randn(n, PATCH_DIM, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("grid", GRIDS)
def test_matches_stock_tower(load_tiny, grid):
    visual = load_tiny().visual
    pixels = _pixels(grid[0] * grid[1] * grid[2])
    assert FusedVision.supports(visual) is None
    with torch.no_grad():
        ref = visual(pixels, grid_thw=torch.tensor([grid])).pooler_output
        out = FusedVision(visual)(pixels, torch.tensor([grid]))
    assert out.shape == ref.shape
    assert rel_err(out, ref) <= 1e-5


def test_bf16_matches_stock_tower(load_tiny):
    """In bf16 the same roundings happen in the same places (fp32 rotation, bf16 elsewhere), up to the order of
    the patch embedding's sums (a matrix product instead of a convolution): as far from the fp32 tower as the
    stock bf16 tower is, and close to it."""
    import copy

    visual32 = load_tiny().visual
    visual = copy.deepcopy(visual32).to(torch.bfloat16)
    pixels, grid = _pixels(3 * 4 * 6, seed=1), torch.tensor([[3, 4, 6]])
    with torch.no_grad():
        ref32 = visual32(pixels, grid_thw=grid).pooler_output
        ref = visual(pixels.to(torch.bfloat16), grid_thw=grid).pooler_output
        out = FusedVision(visual)(pixels, grid)
    stock_err = rel_err(ref.float(), ref32)
    assert 1e-3 < stock_err < 3e-2  # bf16 rounding is visible at this size
    assert rel_err(out.float(), ref32) <= 1.5 * stock_err
    assert rel_err(out.float(), ref.float()) <= stock_err


def test_slice_ids_follow_the_processor_order():
    """Row and column of each patch, listed as the processor lays patches out: 2x2 blocks, row-major."""
    ids = slice_ids(4, 6, 2).tolist()
    expected = []
    for br in range(2):
        for bc in range(3):
            for r in range(2):
                for c in range(2):
                    expected.append([2 * br + r, 2 * bc + c])
    assert ids == expected


def test_rejects_a_grid_that_does_not_match(load_tiny):
    fused = FusedVision(load_tiny().visual)
    with pytest.raises(ValueError, match=r"\(2, 4, 4\).*does not describe 40 patches"):
        fused(_pixels(40), torch.tensor([[2, 4, 4]]))
    with pytest.raises(ValueError, match="expected one grid"):
        fused(_pixels(32), torch.tensor([[1, 4, 4], [1, 4, 4]]))


def test_supports_names_what_it_lacks(load_tiny):
    import copy

    visual = copy.deepcopy(load_tiny().visual)
    visual.config.hidden_act = "relu6"
    assert "relu6" in FusedVision.supports(visual)


@pytest.mark.gpu
@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_matches_stock_tower_on_gpu(load_tiny, compile):
    """bf16 on the GPU, eager and compiled: within bf16 rounding of the stock tower (fusion and the patch
    embedding's product reorder sums)."""
    import copy

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    visual = copy.deepcopy(load_tiny().visual).to("cuda", torch.bfloat16)
    grid = torch.tensor([[4, 8, 8]], device="cuda")
    pixels = _pixels(4 * 8 * 8, seed=2).to("cuda")
    with torch.no_grad():
        ref = visual(pixels.to(torch.bfloat16), grid_thw=grid).pooler_output
        ref32 = copy.deepcopy(load_tiny().visual).to("cuda")(pixels, grid_thw=grid).pooler_output
        out = FusedVision(visual, compile=compile)(pixels, grid)
    assert rel_err(out.float(), ref32) <= 1.5 * rel_err(ref.float(), ref32) + 1e-3
    assert rel_err(out.float(), ref.float()) <= 2e-2
