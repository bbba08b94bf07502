"""How `validate` judges a backend's decoder outputs against PyTorch's, as one Polygraphy compare function: the one
`validate` runs, and the one the `polygraphy run` line it prints loads (parity/compare.py), so that the line gives
the verdict `validate` gave.

Rows at left-padding positions are left out (zeroed in both results): no valid query attends to them, and fully
masked attention rows are implementation-defined (ONNX Runtime's Attention and torch's sdpa differ there). The
padding is read from the step's attention mask, which PyTorch's saved results carry under `MASK`. Each output then
passes when its largest absolute difference is within its tolerance.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

#: the key under which PyTorch's results carry the step's attention mask (B, past + new), 1 where a token is real
MASK = "attention_mask"
SCRIPT = "compare.py"


def error_metrics(got: np.ndarray, ref: np.ndarray) -> dict:
    """Largest absolute and relative difference and cosine similarity of two outputs, in float64."""
    g, r = got.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
    err = float(np.abs(g - r).max()) if g.size else 0.0
    scale = float(np.abs(r).max()) if r.size else 0.0
    cos = float(g @ r / (np.linalg.norm(g) * np.linalg.norm(r))) if g.size and np.linalg.norm(r) > 0 else 1.0
    return {"max_abs": err, "max_rel": err / scale if scale else err, "cosine": cos}


def zero_padding(outputs: dict, mask: np.ndarray) -> dict:
    """`outputs` with every row at a padding position zeroed: logits (B, S or 1, vocab) over the mask's last
    columns, the caches (B, heads, capacity, D) over their first rows (the rows past the mask are not written yet)."""
    mask = np.asarray(mask)
    out = {}
    for name, value in outputs.items():
        if name == MASK:
            continue
        value = np.asarray(value)
        if name == "logits":
            out[name] = value * mask[:, -value.shape[1]:, None].astype(value.dtype)
        else:
            rows = np.zeros((mask.shape[0], value.shape[2]), dtype=value.dtype)
            rows[:, : mask.shape[1]] = mask
            out[name] = value * rows[:, None, :, None]
    return out


class PaddingMaskedCompare:
    """Polygraphy compare function: (IterationResult, IterationResult) -> OrderedDict[output, passed]. One of the
    two results (PyTorch's) carries the mask; `atol` gives each output's largest allowed absolute difference."""

    def __init__(self, atol: dict):
        self.atol = {k: float(v) for k, v in atol.items()}

    def __call__(self, run0, run1) -> OrderedDict:
        from polygraphy.logger import G_LOGGER

        mask = next((r[MASK] for r in (run0, run1) if MASK in r), None)
        if mask is None:
            G_LOGGER.error(f"neither result carries {MASK!r}: expected PyTorch's results as `validate` saved them")
            return OrderedDict((name, False) for name in self.atol)
        a, b = (zero_padding(dict(r.items()), mask) for r in (run0, run1))
        verdict = OrderedDict()
        for name, atol in self.atol.items():
            if name not in a or name not in b or a[name].shape != b[name].shape:
                G_LOGGER.error(f"{name}: missing or of another shape ({getattr(a.get(name), 'shape', None)} vs "
                               f"{getattr(b.get(name), 'shape', None)})")
                verdict[name] = False
                continue
            err = float(np.abs(a[name].astype(np.float64) - b[name].astype(np.float64)).max(initial=0.0))
            verdict[name] = err <= atol
            log = G_LOGGER.info if verdict[name] else G_LOGGER.error
            log(f"{name}: max abs difference {err:.3e} outside padding, tolerance {atol:.3e}: "
                f"{'pass' if verdict[name] else 'FAIL'}")
        return verdict


def write_script(parity_dir: Path, atol: dict) -> Path:
    """parity/compare.py for `polygraphy run --compare-func-script`: this module's own source (it needs only numpy
    and Polygraphy, so the line also runs where videorope-trt is not installed) and the tolerances `validate` used."""
    from videorope_trt.artifact.atomic import write_atomic

    tolerances = ", ".join(f"{k!r}: {float(v)!r}" for k, v in atol.items())
    return write_atomic(Path(parity_dir) / SCRIPT, Path(__file__).read_text() + (
        "\n\n# Written by `videorope-trt validate` (parity/report.json, \"commands\"): its comparison, its "
        "tolerances.\n"
        f"compare_outputs = PaddingMaskedCompare({{{tolerances}}})\n"))
