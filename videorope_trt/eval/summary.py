"""The summary of a results file: accuracy per task and deployment over the depth × length grid (the papers'
heatmap), overall accuracy, how often a distractor's lure was picked, and in comparison mode the per-trial agreement
of the two deployments."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from videorope_trt.artifact.atomic import write_atomic

#: the papers' heatmap colors, from zero (red) through yellow to perfect (green)
HEATMAP_COLORS = ("#F0496E", "#EBB839", "#9ad5b3")


def _mean(values) -> float | None:
    values = [float(v) for v in values]
    return sum(values) / len(values) if values else None


def _grid(records, depths, lengths, value) -> list:
    """[depth][length] mean of value(record) over the cell's records (None where the cell has none)."""
    return [[_mean(value(r) for r in records if r["depth"] == d and r["frames"] == n) for n in lengths]
            for d in depths]


def _runner(records, depths, lengths, label) -> dict:
    answers = [r["answers"][label] for r in records]
    out = {"accuracy": _mean(a["correct"] for a in answers),
           "grid": _grid(records, depths, lengths, lambda r: r["answers"][label]["correct"])}
    lured = [a["lured"] for a in answers if "lured" in a]
    if lured:
        out["lured"] = _mean(lured)  # picked the option the distractor carries
    return out


def _agreement(records, depths, lengths) -> dict:
    return {"answer": _mean(r["agree"]["answer"] for r in records),
            "text": _mean(r["agree"]["text"] for r in records),
            "grid": _grid(records, depths, lengths, lambda r: r["agree"]["answer"]),
            "disagreements": [r["trial"] for r in records if not r["agree"]["answer"]]}


def summarize(records, task_names, labels) -> dict:
    """Per task: its grid axes, each deployment's accuracy (overall and per cell), and their agreement (two)."""
    out = {"labels": list(labels), "tasks": {}}
    for name in task_names:
        rs = [r for r in records if r["task"] == name]
        lengths, depths = sorted({r["frames"] for r in rs}), sorted({r["depth"] for r in rs})
        entry = {"lengths": lengths, "depths": depths, "trials": len(rs),
                 "runners": {label: _runner(rs, depths, lengths, label) for label in labels}}
        if len(labels) == 2:
            entry["agreement"] = _agreement(rs, depths, lengths)
        out["tasks"][name] = entry
    out["overall"] = {label: _mean(r["answers"][label]["correct"] for r in records) for label in labels}
    if len(labels) == 2:
        out["overall"]["agreement"] = _mean(r["agree"]["answer"] for r in records)
        out["overall"]["same_text"] = _mean(r["agree"]["text"] for r in records)
    return out


def panels(entry: dict) -> list:
    """[(title, (depths, lengths) matrix)] of one task: each deployment's accuracy, then the agreement."""
    out = [(f"{label}: accuracy", r["grid"]) for label, r in entry["runners"].items()]
    if "agreement" in entry:
        out.append(("agreement (same answer)", entry["agreement"]["grid"]))
    return [(title, np.array([[np.nan if v is None else v for v in row] for row in grid], dtype=np.float64))
            for title, grid in out]


def heatmap_figure(name: str, entry: dict):
    """The papers' figure: accuracy over depth (rows) × haystack length (columns), one panel per deployment (and
    one for the agreement of two)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.colors import LinearSegmentedColormap
    from matplotlib.figure import Figure

    cmap = LinearSegmentedColormap.from_list("retrieval", HEATMAP_COLORS)
    cells = panels(entry)
    width = 0.6 + (1.2 + 0.55 * len(entry["lengths"])) * len(cells)
    fig = Figure(figsize=(max(4.0, width), 1.6 + 0.35 * len(entry["depths"])), layout="constrained")
    fig.suptitle(name, fontsize=10)
    for k, (title, values) in enumerate(cells):
        ax = fig.add_subplot(1, len(cells), k + 1)
        image = ax.imshow(values, cmap=cmap, vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(entry["lengths"])), [str(n) for n in entry["lengths"]], fontsize=8)
        ax.set_yticks(range(len(entry["depths"])), [f"{100 * d:g}" for d in entry["depths"]], fontsize=8)
        ax.set_xlabel("haystack frames", fontsize=8)
        ax.set_title(title, fontsize=9)
        if k == 0:
            ax.set_ylabel("needle depth %", fontsize=8)
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, "" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=fig.axes, shrink=0.9, label="score")
    return fig


def write_outputs(summary: dict, out_dir) -> list:
    """summary.json and one heatmap_<task>.png per task, each written atomically; the paths."""
    out_dir = Path(out_dir)
    paths = [write_atomic(out_dir / "summary.json", json.dumps(summary, indent=1))]
    for name, entry in summary["tasks"].items():
        if not entry["trials"]:
            continue
        buffer = io.BytesIO()
        heatmap_figure(name, entry).savefig(buffer, format="png", dpi=110)
        paths.append(write_atomic(out_dir / f"heatmap_{name}.png", buffer.getvalue()))
    return paths
