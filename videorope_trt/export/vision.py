"""The vision graph: whole temporal slices of one grid → merged visual embeddings, through the model's own blocks.

    pixel_values (N, C*tp*p*p) ─ patch embedding ─ blocks × depth ─ merger ─ image_embeds (N / merge², hidden)
    slice_pos_ids (L, 2) int64 ─ cos/sin (angle in fp32) ─┘

The graph is `models/vision_tower.VisionTower.encode` traced as it runs in PyTorch: the N patches are N / L slices
of L patches each, attended as one batch (N / L, heads, L, head_dim) with no mask (attention stays inside a slice).
So one call holds whole slices of one grid (`artifact.vision_inputs.vision_calls` splits a request): slices of
another length belong to another call. What transformers' tower derives from `grid_thw` with Python loops (the
position ids of a slice) comes from the host (`artifact.vision_inputs.slice_pos_ids`).
"""

from __future__ import annotations

import torch

from videorope_trt.models.vision_tower import VisionTower


class VisionGraph(torch.nn.Module):
    """`VisionTower.encode` over the stock tower's weights, as a module torch.onnx can export."""

    input_names = ("pixel_values", "slice_pos_ids")
    output_names = ("image_embeds",)

    def __init__(self, visual):
        super().__init__()
        self.visual = visual  # a submodule: the exporter lifts its weights under their own names
        self.tower = VisionTower(visual)

    def forward(self, pixel_values, slice_pos_ids):
        return self.tower.encode(pixel_values, slice_pos_ids)
