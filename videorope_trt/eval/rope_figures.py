"""Pictures of the RoPE variants, from `videorope_trt.rope` alone (the angle of frequency pair k of a token is
position[axis_map[k]] · inv_freq[k], docs/facts.md, "Position indices of the RoPE variants"):

- axis sweeps (the VideoRoPE paper's Fig. 4 and 5): how far each frequency pair turns as a video token moves along
  t (frame), h (row) or w (column) of a layout's first video block. M-RoPE turns only its first (highest-frequency)
  pairs along t; VideoRoPE turns its last (lowest-frequency) pairs by δ per frame, and, its layout being diagonal,
  the spatial pairs too.
- the attention-logit decay with temporal distance: the logit between a query (the first text token after the
  video) and the center token of every frame, for identical content (every pair (1, 0)), i.e. the mean over pairs of
  cos(Δposition · inv_freq). A frame repeated every `period` frames (V-NIAH-D's distractors) scores what the curve
  shows at those distances: where a variant's temporal pairs oscillate (M-RoPE's high frequencies) a far copy can
  score as high as a near one, which is how distractors mislead it.
"""

from __future__ import annotations

import io
import json

import numpy as np

from videorope_trt import rope
from videorope_trt.rope.segments import parse_segments

AXES = ("t", "h", "w")


def _video(segments) -> tuple:
    """(index of the first video token, its Segment, index of the first token after it)."""
    start = 0
    for seg in segments:
        if seg.kind == "video":
            return start, seg, start + seg.n
        start += seg.n
    raise ValueError("layout: received no video segment, expected one such as video:16x4x4")


def _layout(layout) -> list:
    return rope.parse_layout(layout) if isinstance(layout, str) else parse_segments(layout)


def _angles(variant, segments, head_dim: int, theta: float, params: dict) -> tuple:
    """(positions (A, L) float64, axis map (F,), inv_freq (F,) float64, angles (L, F) float64)."""
    v = rope.get_variant(variant)
    positions = rope.position_ids(v, segments, **params).astype(np.float64)
    amap = rope.axis_map(v, head_dim)
    freqs = rope.inv_freq(head_dim, theta).astype(np.float64)
    return positions, amap, freqs, positions[amap].T * freqs


def axis_sweeps(variant, layout, head_dim: int = 128, theta: float = 1e6, **params) -> dict:
    """Per axis t, h, w: the tokens (f, 0, 0), (0, i, 0), (0, 0, j) of the first video block and each pair's angle
    relative to token (0, 0, 0): {"axis_map", "inv_freq", "t": {"steps", "tokens", "angles" (steps, F)}, ...}."""
    segments = _layout(layout)
    _, amap, freqs, angles = _angles(variant, segments, head_dim, theta, params)
    start, seg, _ = _video(segments)
    index = {"t": lambda n: start + n * seg.h * seg.w, "h": lambda n: start + n * seg.w, "w": lambda n: start + n}
    out = {"variant": rope.get_variant(variant).name, "axis_map": amap, "inv_freq": freqs}
    for axis, extent in zip(AXES, (seg.t, seg.h, seg.w)):
        tokens = np.array([index[axis](n) for n in range(extent)])
        out[axis] = {"steps": np.arange(extent), "tokens": tokens, "angles": angles[tokens] - angles[tokens[0]]}
    return out


def periodic_decay(variant, layout, period: int = 8, head_dim: int = 128, theta: float = 1e6, **params) -> dict:
    """The logit between the first text token after the video and each frame's center token, identical content:
    {"distance" (T,) frames from the query's side (1 = last frame), "logit" (T,) mean over all pairs,
    "temporal" (T,) mean over the pairs on the t row (None when the variant has none), "repeats" (distances that are
    multiples of `period`), "repeat_logit"}."""
    if int(period) < 1:
        raise ValueError(f"period: received {period}, expected a whole number of frames >= 1")
    segments = _layout(layout)
    positions, amap, freqs, _ = _angles(variant, segments, head_dim, theta, params)
    start, seg, after = _video(segments)
    if after >= positions.shape[1]:
        raise ValueError("layout: expected text after the video (the query), e.g. ...,video:32x4x4,text:4")
    keys = start + np.arange(seg.t) * seg.h * seg.w + (seg.h // 2) * seg.w + seg.w // 2
    delta = positions[:, after][:, None] - positions[:, keys]  # (A, T)
    cosines = np.cos(delta[amap].T * freqs)  # (T, F)
    temporal = amap == 0 if rope.get_variant(variant).num_axes == 3 else np.zeros_like(amap, bool)
    distance = seg.t - np.arange(seg.t)
    repeats = distance % int(period) == 0
    logit = cosines.mean(-1)
    return {"variant": rope.get_variant(variant).name, "distance": distance, "logit": logit,
            "temporal": cosines[:, temporal].mean(-1) if temporal.any() else None,
            "repeats": distance[repeats], "repeat_logit": logit[repeats]}


def angles_figure(sweeps: list):
    """One row per variant, one panel per axis: cos of each pair's relative angle (rows = pairs, highest frequency
    on top) over the steps along that axis."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 2.4 * len(sweeps)), layout="constrained")
    grid = fig.subplots(len(sweeps), 3, squeeze=False)
    for row, sweep in zip(grid, sweeps):
        for ax, axis in zip(row, AXES):
            values = np.cos(sweep[axis]["angles"]).T
            image = ax.imshow(values, aspect="auto", cmap="twilight", vmin=-1, vmax=1, interpolation="nearest")
            ax.set_title(f"{sweep['variant']}: along {axis}", fontsize=9)
            ax.set_xlabel(f"{axis} step")
            ax.set_ylabel("pair k")
        fig.colorbar(image, ax=row[-1], label="cos(angle)")
    return fig


def decay_figure(decays: list):
    """Logit over temporal distance, all pairs (left) and the t row's pairs (right), periodic repeats marked."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    for d in decays:
        line = left.plot(d["distance"], d["logit"], label=d["variant"], lw=1)[0]
        left.plot(d["repeats"], d["repeat_logit"], "o", color=line.get_color(), ms=4)
        if d["temporal"] is not None:
            right.plot(d["distance"], d["temporal"], label=d["variant"], lw=1, color=line.get_color())
            right.plot(d["repeats"], d["temporal"][np.isin(d["distance"], d["repeats"])], "o", color=line.get_color(),
                       ms=4)
    for ax, title in ((left, "all pairs"), (right, "pairs on the t row")):
        ax.set_xlabel("temporal distance to the query (frames)")
        ax.set_ylabel("logit (identical content)")
        ax.set_title(f"{title}; dots: a frame repeated periodically", fontsize=9)
        ax.legend(fontsize=7)
    return fig


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _plain(obj):
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj.tolist() if isinstance(obj, np.ndarray) else obj


def write_rope_plots(variants, layout, out_dir, period: int = 8, head_dim: int = 128, theta: float = 1e6) -> dict:
    """angles.png, decay.png and rope.json (the plotted arrays) in out_dir, each written atomically."""
    from pathlib import Path

    from videorope_trt.artifact.atomic import write_atomic

    if not variants:
        raise ValueError("variants: received none, expected at least one (e.g. m_rope,videorope)")
    sweeps = [axis_sweeps(v, layout, head_dim, theta) for v in variants]
    decays = [periodic_decay(v, layout, period, head_dim, theta) for v in variants]
    out = Path(out_dir)
    paths = {"angles": write_atomic(out / "angles.png", _png(angles_figure(sweeps))),
             "decay": write_atomic(out / "decay.png", _png(decay_figure(decays)))}
    data = {"layout": layout if isinstance(layout, str) else str(layout), "head_dim": head_dim, "theta": theta,
            "period": period, "sweeps": sweeps, "decays": decays}
    paths["data"] = write_atomic(out / "rope.json", json.dumps(_plain(data)))
    return {"paths": paths, "sweeps": sweeps, "decays": decays}
