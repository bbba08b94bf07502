"""The variant registry: each RoPE variant is data — an index rule, a frequency-allocation rule, its decode
step and the parameters it accepts. Names are the ones users already pass (the official `which_rope` /
`rope_type` strings); `time_rope` and `t_scale2_change_freq` are aliases.

Checked against the official VideoRoPE code (github.com/Wiselnn570/VideoRoPE):
- `videorope`: `get_t_scale_rope_index` (transformers) and `videorope-vllm`: δ = 2, integer centring
  ⌊(n-1)/2⌋, text after the t-row max + 1, rope_deltas from the t row.
- `t_scale2_change_freq` is an alias of `videorope`, as in the V-NIAH / V-RULER evaluation code
  (`get_t_scale2_rope_index`: t-row max + 1). VideoRoPE++'s vLLM runner uses the same name with the
  max-over-all-rows rule (`get_input_t_scale_modify_positions`); that behaviour is `videorope_pp` here.
- `ttxy_rope`: VideoRoPE++'s `ttxy_modify_forward` ([t t h w h w h w]) on `videorope_pp` indices.
- `m_modify_*`, `pos_only`, `t_only`: the V-NIAH evaluation's `get_m_modify_*_index`; LTA frequencies go with
  every name holding `m_modify`, `t_only` or `change_freq`, so `pos_only` keeps M-RoPE's.
- `tad_rope` / `time_rope`: vanilla + temporal index, decode `2 * cache_position + rope_deltas`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from videorope_trt.rope import axes, index_rules as ir


@dataclass(frozen=True)
class Variant:
    name: str
    index_rule: Callable  # (cur, Segment, IndexParams) -> (rows (A, n) float64, next text position)
    axis_rule: Callable  # (F,) -> np.int32 (F,) row read by each frequency
    num_axes: int = 3
    decode_step: int = 1  # position advance per text token and per generated token
    default_delta: float | None = None  # ATS δ; None: the variant takes no `delta`
    uses_fps: bool = False  # reads `fps` and `tokens_per_second`
    uses_order: bool = False  # reads `order` (VRoPE)
    doc: str = ""
    aliases: tuple = field(default=())


_ALL = [
    Variant("vanilla_rope", ir.vanilla, axes.all_rows, doc="flattened 1-D RoPE (three equal rows)"),
    Variant("tad_rope", ir.tad, axes.all_rows, decode_step=2, aliases=("time_rope",),
            doc="TAD-RoPE: vanilla + temporal index; text and decode step 2"),
    Variant("m_rope", ir.m_rope, axes.mrope_sections, doc="Qwen2-VL M-RoPE"),
    Variant("qwen25_mrope", ir.qwen25_mrope, axes.mrope_sections, uses_fps=True,
            doc="Qwen2.5-VL M-RoPE with absolute-time t"),
    Variant("qwen3_mrope", ir.qwen3_mrope, axes.interleaved_mrope, doc="Qwen3-VL interleaved M-RoPE"),
    Variant("videorope", ir.diagonal_t_after, axes.lta, default_delta=2.0, aliases=("t_scale2_change_freq",),
            doc="VideoRoPE: LTA + diagonal layout + ATS (official code)"),
    Variant("videorope_pp", ir.diagonal_max_after, axes.lta, default_delta=2.0,
            doc="VideoRoPE++ (vLLM code): as videorope, text after the max over all rows + 1"),
    Variant("ttxy_rope", ir.diagonal_max_after, axes.ttxy, default_delta=2.0,
            doc="VideoRoPE++ ablation: videorope_pp indices, [t t h w h w h w] frequencies"),
    Variant("m_modify_rope", ir.diagonal_t_after, axes.lta, default_delta=1.0, doc="DL + LTA, no ATS"),
    Variant("m_modify_margin_rope", ir.diagonal_max_after, axes.lta, default_delta=1.0,
            doc="DL + LTA, text after the max over all rows + 1"),
    Variant("m_modify_no_center_rope", ir.mrope_t_after, axes.lta,
            doc="M-RoPE grid (no centring) + LTA, text after the t-row max + 1"),
    Variant("pos_only", ir.diagonal_t_after, axes.mrope_sections, default_delta=1.0,
            doc="indices of m_modify_rope, frequencies of M-RoPE"),
    Variant("t_only", ir.m_rope, axes.lta, doc="indices of m_rope, frequencies of LTA"),
    Variant("videorope_paper", ir.diagonal_paper, axes.lta, default_delta=2.0,
            doc="VideoRoPE paper Eq. (7): real-division centring, text after s + δT"),
    Variant("vrope", ir.vrope, axes.period((0, 1, 2, 3)), num_axes=4, uses_order=True,
            doc="VRoPE: four symmetric directions, k % 4"),
    Variant("rope_tie", ir.rope_tie, axes.period((1, 2)), doc="Su's RoPE-Tie v1 (images only), k % 2 over (h, w)"),
    Variant("rope_tv", ir.rope_tv, axes.period((1, 2, 0)), doc="Su's RoPE-TV 3-D, k % 3 over (h, w, t)"),
]

#: name → Variant, aliases included.
VARIANTS: dict[str, Variant] = {v.name: v for v in _ALL} | {a: v for v in _ALL for a in v.aliases}


def get_variant(name) -> Variant:
    """The registered variant `name` (or a `Variant` passed through); unknown names list the known ones."""
    if isinstance(name, Variant):
        return name
    try:
        return VARIANTS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown RoPE variant {name!r}; known variants: {', '.join(sorted(VARIANTS))}") from None
