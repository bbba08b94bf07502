"""RoPE variants: 3D positions, frequencies, axis maps and the reference rotation (numpy only at import).

    position_ids(variant, segments, ...) -> (A, L) float32
    batch_positions(variant, batch_segments, ...) -> BatchPositions
    decode_positions(variant, rope_deltas, cache_position) -> (A, B, S) float32
    segments_from_tokens(input_ids, image_grid_thw, video_grid_thw, ...) -> segments
    axis_map / inv_freq / rotary_tables / apply_rotary
"""

from videorope_trt.rope.frequencies import apply_rotary, axis_map, inv_freq, rotary_tables
from videorope_trt.rope.positions import BatchPositions, batch_positions, decode_positions, position_ids
from videorope_trt.rope.scalings import SCALINGS
from videorope_trt.rope.segments import Segment, parse_layout
from videorope_trt.rope.tokens import segments_from_tokens
from videorope_trt.rope.variants import VARIANTS, Variant, get_variant

__all__ = [
    "BatchPositions", "SCALINGS", "Segment", "VARIANTS", "Variant", "apply_rotary", "axis_map", "batch_positions",
    "decode_positions", "get_variant", "inv_freq", "parse_layout", "position_ids", "rotary_tables",
    "segments_from_tokens",
]
