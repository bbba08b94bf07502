"""Context-extension scalings of `inv_freq`, as VideoRoPE++'s `MRotaryEmbedding.post_init` defines them
(L0 = `original_max_position` = 32768, s = `factor` = 4, D = head_dim, θ = theta).

ntk              θ' = θ·s^(D/(D-2)) on every frequency
yarn             YaRN blend, β_fast = 32, β_slow = 1: high frequencies kept, low ones divided by s; the
                 official code's mscale is 1.0, so no attention temperature
mrope++          time pairs kept; h pairs 0.5·(inv/s) + 0.5·NTK; w pairs NTK, NTK θ' = θ·((L0·s-1)/(L0-1))^(D/(D-2))
videorope++_v1   (VideoRoPE++'s YaRN-V) spatial pairs kept; time pairs use that NTK θ'
dynamic          dynamic NTK: once seq_len = largest position + 1 exceeds L0, θ' = θ·(s·seq_len/L0 - (s-1))^(D/(D-2))
videoropepp_dynamic  as dynamic, with a factor that grows with seq_len instead of s: with
                 d_extra = 2·⌈(D/2)·log_θ(L0/2π)⌉ (the dims that complete a period within L0),
                 s(L) = (L/2π)^(D/d_extra) / θ
                 (VideoRoPE++'s vLLM code, `_videoropepp_dynamic_frequency_update`; docs/facts.md)

Each is applied once, for the length given (`seq_len` for the dynamic ones), as the exported graphs hold fixed
frequencies; VideoRoPE++'s code recomputes the dynamic ones whenever a longer sequence arrives.

mrope++ and videorope++_v1 read the time/h/w pairs from the axis map of `variant`; without one they use the
official split (M-RoPE sections for mrope++, LTA for videorope++_v1), which is what the code hard-codes.
"""

from __future__ import annotations

import math

import numpy as np


def _dim(inv: np.ndarray) -> int:
    return 2 * inv.shape[0]


def _powers(inv, theta_new):
    f = inv.shape[0]
    return 1.0 / theta_new ** (np.arange(f, dtype=np.float64) * 2 / (2 * f))


def _ntk_base(theta, d, s, l0):
    return theta * ((l0 * s - 1) / (l0 - 1)) ** (d / (d - 2))


def ntk(inv, theta, *, factor, original_max_position, **_):
    d = _dim(inv)
    return _powers(inv, theta * factor ** (d / (d - 2)))


def _correction_dim(rotations, d, theta, l0):
    return d * math.log(l0 / (rotations * 2 * math.pi)) / (2 * math.log(theta))


def yarn(inv, theta, *, factor, original_max_position, **_):
    """Pairs below `low` keep inv (extrapolation), above `high` get inv/s (interpolation), a linear ramp between."""
    d, f = _dim(inv), inv.shape[0]
    low = max(math.floor(_correction_dim(32, d, theta, original_max_position)), 0)
    high = min(math.ceil(_correction_dim(1, d, theta, original_max_position)), d - 1)
    if low == high:
        high += 0.001  # the reference's guard against a zero-width ramp
    ramp = np.clip((np.arange(f, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
    return inv / factor * ramp + inv * (1.0 - ramp)


def _axes_for(variant, f, default_rule, name):
    from videorope_trt.rope.variants import get_variant

    amap = (default_rule if variant is None else get_variant(variant).axis_rule)(f)
    if set(np.unique(amap).tolist()) != {0, 1, 2}:
        raise ValueError(f"scaling {name!r} needs a (t, h, w) variant; {variant!r} maps frequencies to rows "
                         f"{sorted(set(np.unique(amap).tolist()))}")
    return amap


def mrope_pp(inv, theta, *, factor, original_max_position, variant=None, **_):
    from videorope_trt.rope.axes import mrope_sections

    d = _dim(inv)
    amap = _axes_for(variant, inv.shape[0], mrope_sections, "mrope++")
    ntk_inv = _powers(inv, _ntk_base(theta, d, factor, original_max_position))
    h = 0.5 * inv / factor + 0.5 * ntk_inv
    return np.where(amap == 0, inv, np.where(amap == 1, h, ntk_inv))


def videorope_pp_v1(inv, theta, *, factor, original_max_position, variant=None, **_):
    from videorope_trt.rope.axes import lta

    d = _dim(inv)
    amap = _axes_for(variant, inv.shape[0], lta, "videorope++_v1")
    ntk_inv = _powers(inv, _ntk_base(theta, d, factor, original_max_position))
    return np.where(amap == 0, ntk_inv, inv)


def dynamic(inv, theta, *, factor, original_max_position, seq_len=None, **_):
    seq_len = _seq_len(seq_len, "dynamic")
    if seq_len <= original_max_position:
        return inv.copy()
    d = _dim(inv)
    return _powers(inv, theta * (factor * seq_len / original_max_position - (factor - 1)) ** (d / (d - 2)))


def _seq_len(seq_len, name: str) -> float:
    if seq_len is None:
        raise ValueError(f"scaling {name!r} needs seq_len (largest position + 1)")
    seq_len = float(seq_len)
    if not math.isfinite(seq_len) or seq_len <= 0:
        raise ValueError(f"seq_len must be a finite positive number, got {seq_len!r}")
    return seq_len


def videoropepp_factor(seq_len: float, theta: float, head_dim: int, original_max_position: float) -> float:
    """VideoRoPE++'s dynamic factor for a sequence of `seq_len` positions. The first d_extra dims complete a whole
    period within L0; (L/2π)^(D/d_extra) is the base at which dim d_extra's period is exactly `seq_len`, and the
    factor is that base over θ (below 1 just past L0, where the formula then changes θ by almost nothing)."""
    d_extra = 2 * math.ceil(head_dim / 2 * math.log(original_max_position / (2 * math.pi), theta))
    return (seq_len / (2 * math.pi)) ** (head_dim / d_extra) / theta


def videoropepp_dynamic(inv, theta, *, factor, original_max_position, seq_len=None, **_):
    """`factor` is not read: the length decides it (`videoropepp_factor`)."""
    seq_len = _seq_len(seq_len, "videoropepp_dynamic")
    if seq_len <= original_max_position:
        return inv.copy()
    d = _dim(inv)
    s = videoropepp_factor(seq_len, theta, d, original_max_position)
    return _powers(inv, theta * (s * seq_len / original_max_position - (s - 1)) ** (d / (d - 2)))


#: name → function(inv_freq float64, theta, factor=, original_max_position=, seq_len=, variant=)
SCALINGS = {"ntk": ntk, "yarn": yarn, "mrope++": mrope_pp, "videorope++_v1": videorope_pp_v1, "dynamic": dynamic,
            "videoropepp_dynamic": videoropepp_dynamic}
_PARAMS = {"factor", "original_max_position", "seq_len", "variant"}


def context_limit(max_positions: int, params: dict) -> int:
    """The longest context (prompt + generated tokens) a RoPE with `params` is meant for: the model's
    max_position_embeddings, or what its scaling extends that to (the `seq_len` a dynamic one was computed for,
    else `factor` times it)."""
    name = params.get("scaling")
    if not name:
        return int(max_positions)
    if params.get("seq_len") is not None:
        return max(int(max_positions), int(params["seq_len"]))
    return int(max_positions * float(params.get("factor", 4.0)))


def scale_inv_freq(name, inv, theta, *, factor=4.0, original_max_position=32768, **params) -> np.ndarray:
    """Apply the scaling `name` to plain inv_freq (float64)."""
    if name not in SCALINGS:
        raise ValueError(f"unknown scaling {name!r}; known scalings: {', '.join(sorted(SCALINGS))}")
    unknown = set(params) - _PARAMS
    if unknown:
        raise ValueError(f"unknown scaling params {sorted(unknown)}; expected some of {sorted(_PARAMS)}")
    factor = float(factor)
    if not (math.isfinite(factor) and factor >= 1):
        raise ValueError(f"factor must be a finite number >= 1, got {factor!r}")
    if isinstance(original_max_position, bool) or not float(original_max_position) > 1:
        raise ValueError(f"original_max_position must be > 1, got {original_max_position!r}")
    return SCALINGS[name](np.asarray(inv, dtype=np.float64), theta, factor=factor,
                          original_max_position=float(original_max_position), **params)
