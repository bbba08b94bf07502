"""The model's RoPE settings: which variant, its parameters, and the (inv_freq, axis_map) the `VideoRope` op reads.

The variant and its parameters come from the caller (command line) or from config.json's `"videorope_trt"`
field, else M-RoPE (what a stock Qwen2-VL checkpoint was trained with). `record()` is what gets written back
wherever the model is saved (config.json, the export manifest).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from videorope_trt.rope.contract import RotaryAttrs

#: Config field that records the variant and its parameters.
CONFIG_FIELD = "videorope_trt"
DEFAULT_VARIANT = "m_rope"
#: Parameters the position rule reads; every other parameter belongs to the frequencies (scaling and its knobs).
POSITION_PARAMS = ("delta", "fps", "tokens_per_second", "order")


@dataclass(frozen=True)
class RopeSettings:
    variant: str
    params: dict = field(default_factory=dict)
    theta: float = 1_000_000.0
    head_dim: int = 128
    inv_freq: object = None  # torch.float32 (head_dim // 2,)
    axis_map: object = None  # torch.int32 (head_dim // 2,)
    num_axes: int = 3
    decode_step: int = 1
    attrs: RotaryAttrs = RotaryAttrs()

    @property
    def position_params(self) -> dict:
        return {k: v for k, v in self.params.items() if k in POSITION_PARAMS}

    @property
    def frequency_params(self) -> dict:
        return {k: v for k, v in self.params.items() if k not in POSITION_PARAMS}

    def record(self) -> dict:
        """JSON-ready description: the variant, its parameters, theta, head dim and the axis map."""
        return {
            "variant": self.variant,
            **self.params,
            "theta": self.theta,
            "head_dim": self.head_dim,
            "axis_map": [int(a) for a in np.asarray(self.axis_map)],
        }


def resolve_rope_choice(config_field: dict | None, variant: str | None, rope_params: dict | None) -> tuple[str, dict]:
    """(variant, params): the argument wins, then the config field, then M-RoPE.

    Parameters from the config are kept when the variant is the config's (named or not): a checkpoint trained with
    δ = 0.5 keeps it. Another variant chosen on the command line starts from its own defaults plus `rope_params`.
    """
    recorded = dict(config_field or {})
    recorded_variant = recorded.pop("variant", DEFAULT_VARIANT)
    if variant is None or _same_variant(variant, recorded_variant):
        variant = recorded_variant
        params = {k: v for k, v in recorded.items() if k not in ("theta", "head_dim", "axis_map")}
    else:
        params = {}
    params.update(rope_params or {})
    return variant, params


def _same_variant(a: str, b: str) -> bool:
    from videorope_trt import rope

    try:
        return rope.get_variant(a).name == rope.get_variant(b).name
    except ValueError:
        return False


def make_rope_settings(variant: str, params: dict, theta: float, head_dim: int) -> RopeSettings:
    """Look the variant up in `videorope_trt.rope` and compute its frequencies for this head dim."""
    import torch

    from videorope_trt import rope

    v = rope.get_variant(variant)  # ValueError listing the known variants
    if head_dim % 2:
        raise ValueError(f"rope: head_dim must be even, got {head_dim}")
    params = dict(params)
    if v.default_delta is not None:
        params.setdefault("delta", float(v.default_delta))  # recorded as the value in force, never implicit
    settings = RopeSettings(variant=v.name, params=params, theta=float(theta), head_dim=int(head_dim))
    freq_params = settings.frequency_params
    if freq_params.get("scaling"):  # scalings that treat the time axis apart read the variant's axis map
        freq_params = {"variant": v.name} | freq_params
    inv = rope.inv_freq(head_dim, theta, **freq_params)
    # Position parameters are otherwise read only at the first prompt; check them now against the variant.
    rope.position_ids(v.name, [("text", 1)], **settings.position_params)
    amap = rope.axis_map(v.name, head_dim)
    return RopeSettings(
        variant=v.name,
        params=params,
        theta=float(theta),
        head_dim=int(head_dim),
        inv_freq=torch.as_tensor(np.asarray(inv, dtype=np.float32)),
        axis_map=torch.as_tensor(np.asarray(amap, dtype=np.int32)),
        num_axes=v.num_axes,
        decode_step=v.decode_step,
    )
