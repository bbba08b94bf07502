"""Qwen2-VL's vision tower written out over its own weights: one function per block, for the GPU runtime.

Same weights and the same math as transformers' tower (tests compare them), arranged for speed:

  * the patch embedding is one matrix product: the Conv3d's kernel equals its stride, so each output is one dot
    product of a flattened patch with a flattened filter (cuDNN's 3D convolution is slower at this shape);
  * the rotary cos/sin are built once per call for one temporal slice (every slice has the same (h, w) ids) and
    broadcast over the slices;
  * the slices are a batch (slices, heads, h*w, d): one SDPA call per layer, as `vision_attention` does;
  * a block is a plain function of (hidden, cos, sin, weights), so `torch.compile` compiles it once and all 32
    layers reuse it, fusing the norms, the fp32 rotation, the bias adds and the activation into few kernels.

    patches (N, C*tp*p*p) ─ linear ─ block × depth ─ merger ─ (N / merge², hidden)

`FusedVision.supports(visual)` says whether a tower has the stock layout this relies on (LayerNorm blocks, a
fused qkv projection, an activation named in `ACTIVATIONS`); callers fall back to the stock tower otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: The tower's `hidden_act` names → the same function written plainly (torch.compile traces it as is).
ACTIVATIONS = {
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "gelu": F.gelu,
    "silu": F.silu,
}


#: inductor searches its kernels' block sizes (coordinate descent) when it compiles a block: on an H200 the two
#: layer norms' kernels went 21 → 7 ms and 23 → 13 ms over a 32k-token video (docs/benchmarks.md, "Vision")
COMPILE_OPTIONS = {"coordinate_descent_tuning": True}


def rotate(t, cos, sin):
    """Rotate-half rotation in fp32, rounded back to t's dtype (as transformers' `apply_rotary_pos_emb_vision`).
    t (slices, length, heads, d); cos/sin (length, 1, d) fp32."""
    f = t.float()
    a, b = f.chunk(2, dim=-1)
    return (f * cos + torch.cat((-b, a), dim=-1) * sin).to(t.dtype)


def vision_block(x, cos, sin, weights: tuple, heads: int, length: int, eps: float, act: str):
    """One block: x (N, E) → (N, E). N = slices × length; attention stays inside each slice."""
    n1w, n1b, qkv_w, qkv_b, proj_w, proj_b, n2w, n2b, fc1_w, fc1_b, fc2_w, fc2_b = weights
    n, e = x.shape
    h = F.layer_norm(x, (e,), n1w, n1b, eps)
    qkv = F.linear(h, qkv_w, qkv_b).view(n // length, length, 3, heads, e // heads)
    q, k, v = qkv.unbind(2)  # (slices, length, heads, d)
    q, k = rotate(q, cos, sin), rotate(k, cos, sin)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    x = x + F.linear(out.transpose(1, 2).reshape(n, e), proj_w, proj_b)
    h = F.layer_norm(x, (e,), n2w, n2b, eps)
    return x + F.linear(ACTIVATIONS[act](F.linear(h, fc1_w, fc1_b)), fc2_w, fc2_b)


def slice_ids(h: int, w: int, merge: int, device=None):
    """(h*w, 2) (row, column) ids of one temporal slice in the processor's order: merge × merge blocks, row-major
    over blocks, row-major inside each block."""
    rows = torch.arange(h, device=device)[:, None].expand(h, w)
    cols = torch.arange(w, device=device)[None, :].expand(h, w)
    blocks = lambda t: t.reshape(h // merge, merge, w // merge, merge).permute(0, 2, 1, 3).reshape(-1)  # noqa: E731
    return torch.stack([blocks(rows), blocks(cols)], dim=-1)


def _block_weights(blk) -> tuple:
    a, m = blk.attn, blk.mlp
    return (blk.norm1.weight, blk.norm1.bias, a.qkv.weight, a.qkv.bias, a.proj.weight, a.proj.bias,
            blk.norm2.weight, blk.norm2.bias, m.fc1.weight, m.fc1.bias, m.fc2.weight, m.fc2.bias)


class FusedVision:
    """`visual` (transformers' Qwen2-VL vision tower) run block by block through `vision_block`.

    compile=True compiles the block function once (shapes fixed: one compilation per chunk size) with
    `compile_options` (inductor's settings: `torch.compile(options=...)`)."""

    def __init__(self, visual, compile: bool = False, compile_options: dict | None = COMPILE_OPTIONS):
        cfg = visual.config
        self.visual = visual
        self.heads, self.merge = cfg.num_heads, cfg.spatial_merge_size
        self.act = cfg.hidden_act
        self.eps = visual.blocks[0].norm1.eps
        self.weights = [_block_weights(b) for b in visual.blocks]
        proj = visual.patch_embed.proj.weight
        self.patch_weight = proj.reshape(proj.shape[0], -1)  # a view: no second copy
        # the tower's own frequencies (head_dim / 4 of them, shared by rows and columns), with whatever rounding
        # its buffer carries (a model cast to bf16 casts this buffer too, and the stock tower uses it so)
        self.inv_freq = visual.rotary_pos_emb.inv_freq
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

    def cos_sin(self, h: int, w: int, device):
        """(h*w, 1, head_dim) fp32 cos and sin of one slice: angles (rows | columns) repeated for both halves."""
        ids = slice_ids(h, w, self.merge, device).float()
        freqs = (ids[:, :, None] * self.inv_freq.to(device, torch.float32)).reshape(h * w, -1)  # (h*w, 2 * head_dim / 4)
        emb = torch.cat([freqs, freqs], dim=-1)[:, None]
        return emb.cos(), emb.sin()

    def __call__(self, pixel_values, grid_thw):
        """Patches of one video or image (N, C*tp*p*p) with grid_thw (1, 3) → (N / merge², hidden)."""
        grid = [int(v) for v in torch.as_tensor(grid_thw).reshape(-1)]
        if len(grid) != 3:
            raise ValueError(f"FusedVision: expected one grid (t, h, w), got grid_thw of shape {tuple(grid_thw.shape)}")
        t, h, w = grid
        if pixel_values.shape[0] != t * h * w or h % self.merge or w % self.merge:
            raise ValueError(f"FusedVision: grid (t, h, w) = {(t, h, w)} (h and w multiples of {self.merge}) does not "
                             f"describe {pixel_values.shape[0]} patches")
        x = F.linear(pixel_values.to(self.patch_weight.dtype), self.patch_weight)
        cos, sin = self.cos_sin(h, w, x.device)
        for weights in self.weights:
            x = self.block(x, cos, sin, weights, self.heads, h * w, self.eps, self.act)
        return self.visual.merger(x)
