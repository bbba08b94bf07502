"""`VideoRopeQwen2VL`: Qwen2-VL whose decoder rotation follows any RoPE variant of `videorope_trt.rope`.

Built by composition over the stock `Qwen2VLForConditionalGeneration` (its vision tower's weights are run by
`vision_tower.VisionTower`; its embeddings, decoder-layer weights, norm and lm_head are read by our decoder forward in
`decoder.py`). Nothing in transformers is patched. The pieces are separate methods because export and the runtime
call them separately:

    embed(input_ids, pixels, grids) → inputs_embeds          vision(pixels, grid_thw) → merged visual embeddings
    positions(input_ids, grids, attention_mask) → BatchPositions (host-side, numpy)
    decoder(inputs_embeds, positions, attention_mask, past) → (logits, present)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from videorope_trt.models.decoder import decoder_forward
from videorope_trt.models.rope_settings import RopeSettings


class VideoRopeQwen2VL(nn.Module):
    def __init__(self, hf_model, rope: RopeSettings):
        super().__init__()
        self.hf = hf_model  # stock Qwen2VLForConditionalGeneration: holds every weight
        self.config = hf_model.config
        self.rope = rope
        # Buffers so .to(device) moves them; `rope` keeps the CPU copies for the host side and the manifest.
        self.register_buffer("inv_freq", rope.inv_freq.clone(), persistent=False)
        self.register_buffer("axis_map", rope.axis_map.clone(), persistent=False)

    # -- pieces ------------------------------------------------------------------------------------------------

    @property
    def text_model(self):
        return self.hf.model.language_model

    @property
    def visual(self):
        return self.hf.model.visual

    @property
    def dtype(self) -> torch.dtype:
        return self.hf.lm_head.weight.dtype

    def vision(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """Patches (N, C*tp*p*p) + grid (n, 3) in patches → merged visual embeddings (N / merge², hidden).

        The tower's weights through `vision_tower.VisionTower`: each grid's temporal slices attended as one batch
        (the same blocks the exported vision graph holds).
        """
        from videorope_trt.models.vision_tower import VisionTower

        return VisionTower(self.visual)(pixel_values.to(self.dtype), grid_thw)

    def embed(self, input_ids, pixel_values=None, image_grid_thw=None, pixel_values_videos=None, video_grid_thw=None):
        """Token embeddings with each image / video placeholder token replaced by its visual embedding."""
        embeds = self.text_model.embed_tokens(input_ids)
        for pixels, grid, token_id, what in (
            (pixel_values, image_grid_thw, self.config.image_token_id, "image"),
            (pixel_values_videos, video_grid_thw, self.config.video_token_id, "video"),
        ):
            if pixels is None:
                continue
            if grid is None:
                raise ValueError(f"embed: {what} pixels were given without their {what}_grid_thw")
            feats = self.vision(pixels, grid).to(embeds.dtype)
            slots = input_ids == token_id
            if int(slots.sum()) != feats.shape[0]:
                raise ValueError(f"embed: the prompt has {int(slots.sum())} {what} placeholder tokens but the "
                                 f"{what} grids {grid.tolist()} give {feats.shape[0]} visual tokens; expected equal")
            embeds = embeds.masked_scatter(slots[..., None], feats)
        return embeds

    def positions(self, input_ids, image_grid_thw=None, video_grid_thw=None, attention_mask=None, *, fps=None):
        """Positions of a (left-padded) batch for this model's variant: `rope.BatchPositions`.

        `fps`: the sampling rate of the videos (variants with absolute time), one number or one entry per sample.
        """
        from videorope_trt import rope

        ids = np.asarray(input_ids.detach().cpu() if isinstance(input_ids, torch.Tensor) else input_ids)
        mask = np.ones_like(ids) if attention_mask is None else np.asarray(
            attention_mask.detach().cpu() if isinstance(attention_mask, torch.Tensor) else attention_mask)
        _check_left_padded(mask)
        grids = {"image": _grid_list(image_grid_thw), "video": _grid_list(video_grid_thw)}
        merge = self.config.vision_config.spatial_merge_size
        batch = []
        for row, keep in zip(ids, mask.astype(bool)):
            seq = row[keep]
            img = _take_grids(grids["image"], int((seq == self.config.image_token_id).sum()), merge, "image")
            vid = _take_grids(grids["video"], int((seq == self.config.video_token_id).sum()), merge, "video")
            batch.append(rope.segments_from_tokens(
                seq, np.array(img).reshape(-1, 3) if img else None, np.array(vid).reshape(-1, 3) if vid else None,
                image_token_id=self.config.image_token_id, video_token_id=self.config.video_token_id,
                spatial_merge_size=merge))
        for what, left in grids.items():
            if left:
                raise ValueError(f"positions: {len(left)} {what} grid(s) left over; the prompt has fewer {what}s")
        params = self.rope.position_params | ({} if fps is None else {"fps": fps})
        return rope.batch_positions(self.rope.variant, batch, **params)

    def decoder(self, inputs_embeds, positions, attention_mask, past=None):
        """(logits (B, S, vocab), present list[(k, v)] each (B, kv_heads, P+S, head_dim))."""
        rope_args = (self.inv_freq, self.axis_map, self.rope.attrs, self.rope.head_dim)
        return decoder_forward(self.text_model, self.hf.lm_head, inputs_embeds, positions.to(torch.float32),
                               attention_mask, past, rope_args)

    # -- whole model -------------------------------------------------------------------------------------------

    def forward(self, input_ids, attention_mask=None, pixel_values=None, image_grid_thw=None,
                pixel_values_videos=None, video_grid_thw=None):
        """Full prefill: logits (B, S, vocab) and present K/V; positions from this model's variant."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        bp = self.positions(input_ids, image_grid_thw, video_grid_thw, attention_mask)
        if tuple(bp.attention_mask.shape) != tuple(attention_mask.shape):
            raise ValueError(f"forward: the layout gives a mask of shape {tuple(bp.attention_mask.shape)}, "
                             f"the input's is {tuple(attention_mask.shape)}")
        embeds = self.embed(input_ids, pixel_values, image_grid_thw, pixel_values_videos, video_grid_thw)
        pos = torch.as_tensor(bp.positions, dtype=torch.float32, device=embeds.device)
        return self.decoder(embeds, pos, attention_mask.to(embeds.device))


def _check_left_padded(mask: np.ndarray) -> None:
    if mask.ndim != 2:
        raise ValueError(f"attention_mask must be (B, L), got shape {mask.shape}")
    if np.any(np.diff(mask.astype(np.int64), axis=1) < 0):
        raise ValueError("attention_mask must be left padded (zeros before ones in every row); got right padding")


def _grid_list(grid) -> list:
    if grid is None:
        return []
    arr = np.asarray(grid.detach().cpu() if isinstance(grid, torch.Tensor) else grid, dtype=np.int64)
    return [tuple(int(x) for x in g) for g in arr.reshape(-1, 3)]


def _take_grids(pool: list, n_tokens: int, merge: int, what: str) -> list:
    """Pop from `pool` the grids whose merged token counts add up to `n_tokens` (one sample's share)."""
    taken, covered = [], 0
    while covered < n_tokens:
        if not pool:
            raise ValueError(f"positions: a sample has {n_tokens} {what} tokens but the {what} grids run out "
                             f"after covering {covered}")
        g = pool.pop(0)
        taken.append(g)
        covered += g[0] * g[1] * g[2] // (merge * merge)
    if covered != n_tokens:
        raise ValueError(f"positions: a sample has {n_tokens} {what} tokens; its grids {taken} give {covered}")
    return taken
