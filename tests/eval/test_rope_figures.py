"""The RoPE pictures checked for their data: each variant's angle sweeps and logit decay against formulas written out
by hand from the variants' position rules (docs/facts.md), the plotted arrays inside the figures, and the command."""

import json

import numpy as np
import pytest

from videorope_trt.cli import main as cli_main
from videorope_trt.eval.rope_figures import angles_figure, axis_sweeps, decay_figure, periodic_decay, write_rope_plots

HEAD_DIM, THETA = 128, 1e6
INV = 1.0 / THETA ** (np.arange(64) * 2 / 128)  # inv_freq of pair k
T, H, W = 12, 3, 5
LAYOUT = f"text:2,video:{T}x{H}x{W},text:3"
K = np.arange(64)
MROPE_T, MROPE_H = K < 16, (K >= 16) & (K < 40)  # M-RoPE sections 16/24/24
LTA_H, LTA_W, LTA_T = (K < 48) & (K % 2 == 0), (K < 48) & (K % 2 == 1), K >= 48  # VideoRoPE's allocation


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-5)


def test_m_rope_turns_only_its_first_pairs_along_t():
    s = axis_sweeps("m_rope", LAYOUT, HEAD_DIM, THETA)
    steps = np.arange(T)[:, None]
    _close(s["t"]["angles"], steps * INV * MROPE_T)  # one position per frame, on the 16 highest frequencies only
    _close(s["h"]["angles"], np.arange(H)[:, None] * INV * MROPE_H)
    assert s["t"]["tokens"].tolist() == [2 + f * H * W for f in range(T)]
    assert s["w"]["tokens"].tolist() == [2, 3, 4, 5, 6]


def test_videorope_turns_every_pair_by_delta_along_t_and_its_spatial_pairs_along_h_w():
    s = axis_sweeps("videorope", LAYOUT, HEAD_DIM, THETA)
    # diagonal layout: t, h and w all advance by δ = 2 from one frame to the next
    _close(s["t"]["angles"], 2.0 * np.arange(T)[:, None] * INV)
    _close(s["h"]["angles"], np.arange(H)[:, None] * INV * LTA_H)
    _close(s["w"]["angles"], np.arange(W)[:, None] * INV * LTA_W)
    assert s["axis_map"].tolist() == np.where(LTA_T, 0, np.where(LTA_H, 1, 2)).tolist()


def _hand_decay(query, key_of_frame, pairs_axis):
    """mean over pairs of cos((query − key)[axis of the pair] · inv_freq) for each frame, plain loops."""
    out = []
    for f in range(T):
        key = key_of_frame(f)
        out.append(np.mean([np.cos((query[pairs_axis[k]] - key[pairs_axis[k]]) * INV[k]) for k in range(64)]))
    return np.array(out)


def test_logit_decay_against_the_position_rules():
    # M-RoPE: the block starts at s = 2; the query after it sits at s + max(T, H, W) on every axis;
    # frame f's center token (H // 2, W // 2) is at (s + f, s + 1, s + 2)
    axis = np.where(MROPE_T, 0, np.where(MROPE_H, 1, 2))
    d = periodic_decay("m_rope", LAYOUT, period=4, head_dim=HEAD_DIM, theta=THETA)
    _close(d["logit"], _hand_decay([14, 14, 14], lambda f: (2 + f, 3, 4), axis))
    _close(d["temporal"], [np.mean(np.cos((12 - f) * INV[:16])) for f in range(T)])
    assert d["distance"].tolist() == list(range(T, 0, -1)) and d["repeats"].tolist() == [12, 8, 4]
    _close(d["repeat_logit"], d["logit"][[0, 4, 8]])
    # VideoRoPE: t = s + 2f, h = t + i − 1, w = t + j − 2; the query at the t row's largest + 1 = s + 2(T − 1) + 1
    axis = np.where(LTA_T, 0, np.where(LTA_H, 1, 2))
    q = 2 + 2 * (T - 1) + 1
    d = periodic_decay("videorope", LAYOUT, period=4, head_dim=HEAD_DIM, theta=THETA)
    _close(d["logit"], _hand_decay([q, q, q], lambda f: (2 + 2 * f,) * 3, axis))
    # vanilla RoPE: one flattened position; VRoPE has no t row
    d = periodic_decay("vanilla_rope", LAYOUT, head_dim=HEAD_DIM, theta=THETA)
    _close(d["logit"], _hand_decay([2 + T * H * W] * 3, lambda f: (2 + f * H * W + 7,) * 3, np.zeros(64, int)))
    assert periodic_decay("vrope", LAYOUT)["temporal"] is None


def test_why_distractors_mislead_m_rope():
    """On its t-row pairs, M-RoPE's logit is not monotone in distance: a far copy of a frame can outscore a nearer
    one. VideoRoPE's low-frequency t pairs decay monotonically."""
    layout = "text:2,video:64x4x4,text:2"
    m = periodic_decay("m_rope", layout)["temporal"][::-1]  # by increasing distance
    v = periodic_decay("videorope", layout)["temporal"][::-1]
    assert np.any(np.diff(m) > 0.05)  # rises again somewhere
    assert np.all(np.diff(v) <= 1e-12) and v[-1] > 0.99


def test_figures_hold_the_plotted_data(tmp_path):
    sweeps = [axis_sweeps(v, LAYOUT) for v in ("m_rope", "videorope")]
    fig = angles_figure(sweeps)
    images = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    assert len(images) == 6
    for image, (sweep, axis) in zip(images, [(s, a) for s in sweeps for a in "thw"]):
        _close(np.asarray(image), np.cos(sweep[axis]["angles"]).T)
    decays = [periodic_decay(v, LAYOUT, period=4) for v in ("m_rope", "videorope")]
    left = decay_figure(decays).axes[0]
    curves = [line.get_ydata() for line in left.lines if line.get_linestyle() == "-"]
    for curve, d in zip(curves, decays):
        _close(curve, d["logit"])


def test_plot_rope_command_writes_pictures_and_their_data(tmp_path, capsys):
    assert cli_main(["plot-rope", "--variants", "m_rope,videorope", "--layout", LAYOUT, "--period", "4",
                     "--out", str(tmp_path)]) == 0
    assert "wrote" in capsys.readouterr().out
    for name in ("angles.png", "decay.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    data = json.loads((tmp_path / "rope.json").read_text())
    _close(np.array(data["sweeps"][1]["t"]["angles"]), 2.0 * np.arange(T)[:, None] * INV)
    _close(np.array(data["decays"][0]["logit"]), periodic_decay("m_rope", LAYOUT, period=4)["logit"])
    assert cli_main(["plot-rope", "--variants", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown RoPE variant 'nope'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="expected text after the video"):
        periodic_decay("m_rope", "text:2,video:4x2x2")
    with pytest.raises(ValueError, match="received no video segment"):
        write_rope_plots(["m_rope"], "text:4", tmp_path)
