"""`VisionTower` (the tower written out block by block: the model's vision call, the PyTorch backend and the exported
graph all run it) against transformers' stock tower, the reference, on the same weights: one grid and several
(images and videos of different sizes, odd and even slice counts), fp32 / fp16 / bf16."""

import copy

import numpy as np
import pytest
import torch

from videorope_trt.artifact.vision_inputs import VisionCall, slice_pos_ids, vision_calls
from videorope_trt.models.vision_tower import VisionTower

from _model_inputs import PATCH_DIM, rel_err

GRIDS = {  # (t, h, w) in patches, one row per image / video of one vision call
    "video, 5 slices": [[5, 4, 6]],
    "video, 4 slices": [[4, 6, 4]],
    "image": [[1, 4, 4]],
    "two images of one size": [[1, 4, 4], [1, 4, 4]],
    "image + video of another size": [[1, 4, 4], [3, 4, 6]],
    "two videos of different sizes": [[2, 6, 4], [3, 4, 4]],
    "one merge block per slice": [[3, 2, 2]],
}


def _pixels(grid, seed=0):
    n = sum(t * h * w for t, h, w in grid)
    return torch.randn(n, PATCH_DIM, generator=torch.Generator().manual_seed(seed))


class _CountSdpa:
    """Counts torch's SDPA calls (both towers reach it through `torch.nn.functional`)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        self.inner = torch.nn.functional.scaled_dot_product_attention
        monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)


@pytest.mark.parametrize("name", list(GRIDS))
def test_matches_stock_tower(load_tiny, monkeypatch, name):
    """fp32: within 1e-5 of the stock tower (the patch embedding's sums run in another order), with one attention
    call per grid and layer where the stock tower makes one per temporal slice and layer."""
    model = load_tiny()
    visual, grid = model.visual, torch.tensor(GRIDS[name])
    pixels = _pixels(GRIDS[name])
    depth = len(visual.blocks)
    assert visual.config._attn_implementation == "sdpa"  # the reference is the stock per-slice sdpa path
    with torch.no_grad():
        sdpa = _CountSdpa(monkeypatch)
        ref = visual(pixels, grid_thw=grid).pooler_output
        stock_calls, sdpa.calls = sdpa.calls, 0
        out = VisionTower(visual)(pixels, grid)
        tower_calls = sdpa.calls
        through_model = model.vision(pixels, grid)
    assert stock_calls == depth * int(grid[:, 0].sum()) and tower_calls == depth * len(grid)
    assert out.shape == ref.shape == (pixels.shape[0] // 4, model.config.vision_config.hidden_size)
    assert out.dtype == torch.float32 and rel_err(out, ref) <= 1e-5
    assert torch.equal(through_model, out)  # the model's vision call is this tower


@pytest.mark.parametrize("dtype,stock_err", [(torch.float16, (1e-4, 3e-3)), (torch.bfloat16, (1e-3, 3e-2))],
                         ids=["fp16", "bf16"])
def test_half_precision_matches_stock_tower(load_tiny, dtype, stock_err):
    """In fp16 / bf16 the same roundings happen in the same places (fp32 rotation, the tower's dtype elsewhere), up
    to the order of the patch embedding's sums (a matrix product instead of a convolution): as far from the fp32
    tower as the stock tower in that dtype is, and close to it."""
    visual32 = load_tiny().visual
    visual = copy.deepcopy(visual32).to(dtype)
    grid = torch.tensor([[3, 4, 6], [1, 4, 4]])
    pixels = _pixels(grid.tolist(), seed=1)
    with torch.no_grad():
        ref32 = visual32(pixels, grid_thw=grid).pooler_output
        ref = visual(pixels.to(dtype), grid_thw=grid).pooler_output
        out = VisionTower(visual)(pixels, grid)
    assert out.dtype == dtype
    err = rel_err(ref.float(), ref32)
    assert stock_err[0] < err < stock_err[1]  # the rounding is visible at this size
    assert rel_err(out.float(), ref32) <= 1.5 * err
    assert rel_err(out.float(), ref.float()) <= err


def test_quantizable_linears_are_called_as_modules(load_tiny):
    """A linear that is not a plain nn.Linear (ModelOpt's quantized Linear while calibrating, the Q/DQ Linear after)
    is called as a module, so that its quantizers see the product; plain ones are read as weights."""

    class Counted(torch.nn.Linear):
        calls = 0

        def forward(self, x):
            Counted.calls += 1
            return super().forward(x)

    visual = copy.deepcopy(load_tiny().visual)
    old = visual.blocks[1].mlp.fc1
    visual.blocks[1].mlp.fc1 = Counted(old.in_features, old.out_features)
    visual.blocks[1].mlp.fc1.load_state_dict(old.state_dict())
    grid = torch.tensor([[2, 4, 4], [1, 6, 4]])
    pixels = _pixels(grid.tolist())
    with torch.no_grad():
        ref = visual(pixels, grid_thw=grid).pooler_output
        Counted.calls = 0
        out = VisionTower(visual)(pixels, grid)
    assert Counted.calls == 2 and rel_err(out, ref) <= 1e-5  # once per grid


def test_rejects_grids_that_do_not_match(load_tiny):
    tower = VisionTower(load_tiny().visual)
    with pytest.raises(ValueError, match=r"grids \[\[2, 4, 4\]\] hold 32 patches, pixel_values has 40 rows"):
        tower(torch.zeros(40, PATCH_DIM), torch.tensor([[2, 4, 4]]))
    with pytest.raises(ValueError, match=r"grid \(t, h, w\) = \(1, 4, 3\): expected t >= 1 and h, w positive "
                                         r"multiples of the merge size 2"):
        tower(torch.zeros(12, PATCH_DIM), torch.tensor([[1, 4, 3]]))


def test_refuses_a_tower_of_another_layout(load_tiny):
    """No fallback: a tower the blocks do not compute is refused with the reason, by the model's vision call too."""
    model = copy.deepcopy(load_tiny())
    model.visual.config.hidden_act = "relu6"
    assert "relu6" in VisionTower.supports(model.visual)
    with pytest.raises(ValueError, match=r"vision tower: vision activation 'relu6' is not one of .*Qwen2-VL tower"):
        VisionTower(model.visual)
    with pytest.raises(ValueError, match="vision activation 'relu6'"):
        model.vision(torch.zeros(16, PATCH_DIM), torch.tensor([[1, 4, 4]]))


def test_slice_pos_ids_follow_the_processor_order():
    """Row and column of each patch, listed as the processor lays patches out: 2x2 blocks, row-major."""
    ids = slice_pos_ids(4, 6, 2)
    expected = [[2 * br + r, 2 * bc + c] for br in range(2) for bc in range(3) for r in range(2) for c in range(2)]
    assert ids.dtype == np.int64 and ids.tolist() == expected
    with pytest.raises(ValueError, match="a slice of 4 x 3 patches is not a whole number of 2 x 2 merge blocks"):
        slice_pos_ids(4, 3, 2)


def test_vision_calls_take_whole_slices_of_one_grid():
    """Each grid on its own (its slices have one length), chunked into whole slices within the call's limit."""
    grids = [[5, 4, 6], [1, 4, 4], [3, 2, 2]]  # 120, 16 and 12 patches
    assert vision_calls(grids, 2) == [VisionCall(0, 120, 4, 6), VisionCall(120, 136, 4, 4), VisionCall(136, 148, 2, 2)]
    assert vision_calls(grids, 2, max_patches=50) == [
        VisionCall(0, 48, 4, 6), VisionCall(48, 96, 4, 6), VisionCall(96, 120, 4, 6),  # 2 + 2 + 1 slices of 24
        VisionCall(120, 136, 4, 4), VisionCall(136, 148, 2, 2)]
    with pytest.raises(ValueError, match=r"one temporal slice of grid \(5, 4, 6\) has 24 patches; a call takes at "
                                         r"most 20"):
        vision_calls(grids, 2, max_patches=20)


@pytest.mark.gpu
@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_matches_stock_tower_on_gpu(load_tiny, compile):
    """bf16 on the GPU, eager and compiled, one grid and two: within bf16 rounding of the stock tower (fusion and
    the patch embedding's product reorder sums)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    visual = copy.deepcopy(load_tiny().visual).to("cuda", torch.bfloat16)
    visual32 = copy.deepcopy(load_tiny().visual).to("cuda")
    tower = VisionTower(visual, compile=compile)
    for grid in ([[4, 8, 8]], [[4, 8, 8], [1, 4, 6]]):
        pixels = _pixels(grid, seed=2).to("cuda")
        with torch.no_grad():
            ref = visual(pixels.to(torch.bfloat16), grid_thw=torch.tensor(grid, device="cuda")).pooler_output
            ref32 = visual32(pixels, grid_thw=torch.tensor(grid, device="cuda")).pooler_output
            out = tower(pixels, torch.tensor(grid))  # the grid on the host, as every backend passes it
        assert rel_err(out.float(), ref32) <= 1.5 * rel_err(ref.float(), ref32) + 1e-3
        assert rel_err(out.float(), ref.float()) <= 2e-2
