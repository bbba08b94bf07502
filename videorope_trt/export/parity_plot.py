"""`validate`'s error plot: each backend's largest relative error per output, one labelled tick per output (the
vision embeddings, the logits, then the K/V caches layer by layer), and the tolerance they are judged against."""

from __future__ import annotations

from pathlib import Path


def error_figure(rows: list, max_rel: float):
    """The figure of `rows` (validate's table: backend, output, max_rel) against the tolerance `max_rel`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outputs = list(dict.fromkeys(r["output"] for r in rows))  # in table order, each once
    x = {name: i for i, name in enumerate(outputs)}
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(outputs) + 2), 4))
    for runner in dict.fromkeys(r["backend"] for r in rows):
        mine = [r for r in rows if r["backend"] == runner]
        ax.semilogy([x[r["output"]] for r in mine], [max(r["max_rel"], 1e-12) for r in mine], marker="o",
                    linestyle="none", label=runner)
    ax.axhline(max_rel, color="red", linestyle="--", linewidth=1, label=f"tolerance (max rel {max_rel:g})")
    ax.set_xticks(range(len(outputs)), outputs, rotation=60, ha="right", fontsize=7)
    ax.set_xlabel("output")
    ax.set_ylabel("max relative error (all steps)")
    ax.set_title("error per output: vision embeddings, logits, then the K/V caches layer by layer")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_errors(rows: list, max_rel: float, path: Path) -> None:
    import io

    import matplotlib.pyplot as plt

    from videorope_trt.artifact.atomic import write_atomic

    fig = error_figure(rows, max_rel)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    write_atomic(path, buf.getvalue())
