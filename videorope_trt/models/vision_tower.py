"""Qwen2-VL's vision tower written out over its own weights: the one implementation every path runs.

The model's vision call (`VideoRopeQwen2VL.vision`), the PyTorch backend (eager, or compiled on a GPU) and the
exported vision graph (`export/vision.py` traces `VisionTower.encode`) all run these blocks; transformers' stock
tower is the reference the tests and `validate` hold them to (same weights, same math).

    patches (N, C*tp*p*p) ─ linear ─ block × depth ─ merger ─ (N / merge², hidden)
    slice ids (L, 2) ─ cos/sin (fp32) ─┘

  * the patch embedding is one matrix product: the Conv3d's kernel equals its stride, so each output is one dot
    product of a flattened patch with a flattened filter (cuDNN's 3D convolution is slower at this shape);
  * attention never crosses a temporal slice, and every slice of one grid has the same h*w patches with the same
    (row, column) ids. So the cos/sin are built once for one slice (the angle id × inv_freq in fp32) and broadcast,
    and the slices are a batch (slices, heads, L, d): one SDPA call per layer and no mask, which is exactly the
    per-slice attention. This is why one call (`encode`) takes whole slices of one grid: slices of different
    lengths do not form a batch (they would need an (N, N) mask), so `__call__` encodes each grid on its own;
  * a block is a plain function of (hidden, cos, sin, weights), so `torch.compile` compiles it once and every layer
    reuses it, fusing the norms, the fp32 rotation, the bias adds and the activation into few kernels.

A plain `nn.Linear` is read as its (weight, bias); any other linear module (ModelOpt's quantized Linear while
calibrating, the Q/DQ Linear that replaces it) is called as it is, so that its quantizers see, and its Q/DQ nodes
shape, the product. `VisionTower.supports(visual)` says whether a tower has the stock layout this relies on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from videorope_trt.artifact.vision_inputs import check_grids, slice_pos_ids

#: The tower's `hidden_act` names → the same function written plainly (torch.compile traces it as is).
ACTIVATIONS = {
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "gelu": F.gelu,
    "silu": F.silu,
}


#: inductor searches its kernels' block sizes (coordinate descent) when it compiles a block (docs/benchmarks.md,
#: "Vision", measures what it gains)
COMPILE_OPTIONS = {"coordinate_descent_tuning": True}


def rotate_half(t, cos, sin):
    """Rotate-half rotation in fp32, rounded back to t's dtype (as transformers' `apply_rotary_pos_emb_vision`).
    t (slices, length, heads, d); cos/sin (length, 1, d) fp32."""
    f = t.float()
    a, b = f.chunk(2, dim=-1)
    return (f * cos + torch.cat((-b, a), dim=-1) * sin).to(t.dtype)


def linear(x, layer):
    """`layer`: (weight, bias) of a plain Linear, or a linear module to call (see the module docstring)."""
    return F.linear(x, *layer) if isinstance(layer, tuple) else layer(x)


def vision_block(x, cos, sin, weights: tuple, heads: int, length: int, eps: float, act: str):
    """One block: x (N, E) → (N, E). N = slices × length; attention stays inside each slice."""
    n1w, n1b, qkv, proj, n2w, n2b, fc1, fc2 = weights
    n, e = x.shape
    h = F.layer_norm(x, (e,), n1w, n1b, eps)
    q, k, v = linear(h, qkv).view(n // length, length, 3, heads, e // heads).unbind(2)  # (slices, length, heads, d)
    q, k = rotate_half(q, cos, sin), rotate_half(k, cos, sin)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    x = x + linear(out.transpose(1, 2).reshape(n, e), proj)
    h = F.layer_norm(x, (e,), n2w, n2b, eps)
    return x + linear(ACTIVATIONS[act](linear(h, fc1)), fc2)


def _layer(module):
    return (module.weight, module.bias) if type(module) is torch.nn.Linear else module


def block_weights(blk) -> tuple:
    """A block's weights in `vision_block`'s order, read from the block at every call (a model moved to another
    device or dtype is read as it is now)."""
    a, m = blk.attn, blk.mlp
    return (blk.norm1.weight, blk.norm1.bias, _layer(a.qkv), _layer(a.proj), blk.norm2.weight, blk.norm2.bias,
            _layer(m.fc1), _layer(m.fc2))


def _on_device(ids, device):
    """Host ids on `device`: from page-locked memory on CUDA, so the copy does not wait for the work queued before
    it (a copy from pageable memory synchronizes the stream)."""
    t = torch.from_numpy(ids)
    if torch.device(device).type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


class VisionTower:
    """`visual` (transformers' Qwen2-VL vision tower) run block by block through `vision_block`.

    compile=True compiles the block function once (shapes fixed: one compilation per chunk size) with
    `compile_options` (inductor's settings: `torch.compile(options=...)`). A tower without the stock layout is
    refused (ValueError naming what it lacks)."""

    def __init__(self, visual, compile: bool = False, compile_options: dict | None = COMPILE_OPTIONS):
        reason = self.supports(visual)
        if reason is not None:
            raise ValueError(f"vision tower: {reason}; this project runs the Qwen2-VL tower layout only")
        cfg = visual.config
        self.visual = visual
        self.heads, self.merge, self.act = cfg.num_heads, cfg.spatial_merge_size, cfg.hidden_act
        self.eps = visual.blocks[0].norm1.eps
        self.block = torch.compile(vision_block, dynamic=False, options=compile_options) if compile else vision_block

    @staticmethod
    def supports(visual) -> str | None:
        """None when `visual` has the layout `vision_block` computes, else the reason it does not."""
        cfg = getattr(visual, "config", None)
        if getattr(cfg, "hidden_act", None) not in ACTIVATIONS:
            return f"vision activation {getattr(cfg, 'hidden_act', None)!r} is not one of {sorted(ACTIVATIONS)}"
        blk = visual.blocks[0]
        if not isinstance(blk.norm1, torch.nn.LayerNorm) or not hasattr(blk.attn, "qkv") or not hasattr(blk.mlp, "fc1"):
            return "vision blocks are not LayerNorm + fused qkv + fc1/fc2 (a Qwen2-VL tower)"
        return None

    def cos_sin(self, ids):
        """(L, 1, head_dim) fp32 cos and sin of one slice from its (row, column) ids (L, 2): the angles of rows
        and columns (id × inv_freq in fp32, inv_freq as the tower's buffer holds it) repeated for both halves."""
        inv_freq = self.visual.rotary_pos_emb.inv_freq.to(ids.device, torch.float32)
        freqs = (ids.float()[:, :, None] * inv_freq).reshape(ids.shape[0], -1)  # (L, 2 * head_dim / 4)
        emb = torch.cat([freqs, freqs], dim=-1)[:, None]
        return emb.cos(), emb.sin()

    def encode(self, pixel_values, ids):
        """Whole temporal slices of one grid: patches (N, C*tp*p*p), N a multiple of L, with the (row, column)
        ids of one slice (L, 2) int64 (`artifact.vision_inputs.slice_pos_ids`) → (N / merge², hidden)."""
        v, length = self.visual, ids.shape[0]
        torch._check(pixel_values.shape[0] % length == 0)  # lets the export keep N and L apart, both symbolic
        proj = v.patch_embed.proj.weight
        x = F.linear(pixel_values.to(proj.dtype), proj.reshape(proj.shape[0], -1))  # a view: no second copy
        cos, sin = self.cos_sin(ids)
        for blk in v.blocks:
            x = self.block(x, cos, sin, block_weights(blk), self.heads, length, self.eps, self.act)
        return v.merger(x)

    def __call__(self, pixel_values, grid_thw):
        """Patches of one or more images and videos (N, C*tp*p*p) with their grids (n, 3) in patches (read on the
        host) → (N / merge², hidden): each grid encoded on its own, its temporal slices as one batch."""
        grids = check_grids(torch.as_tensor(grid_thw).cpu(), self.merge, pixel_values.shape[0])
        outs, start = [], 0
        for t, h, w in grids:
            ids = _on_device(slice_pos_ids(h, w, self.merge), pixel_values.device)
            outs.append(self.encode(pixel_values[start:start + t * h * w], ids))
            start += t * h * w
        return outs[0] if len(outs) == 1 else torch.cat(outs)
