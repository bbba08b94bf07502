"""The numerics both driver runs share: the bits a dtype travels in (bf16 has no numpy type), positions of every
variant for a prompt, and the error bound a plugin's output is judged by against the float64 reference."""

from __future__ import annotations

import numpy as np

TRT_DTYPES = {"fp32": 0, "fp16": 1, "bf16": 7}  # nvinfer1::DataType values
MANTISSA = {"fp32": 23, "fp16": 10, "bf16": 7}
#: ‖out − ref‖ / ‖ref‖ limits against the float64 reference.
TOLERANCE = {"fp32": 1e-6, "fp16": 2e-3, "bf16": 2e-3}


# ---- dtype bits: the driver moves raw bytes; bf16 has no numpy type, so it travels as uint16
def to_bits(x32: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "fp32":
        return x32.astype(np.float32)
    if dtype == "fp16":
        return x32.astype(np.float16)
    u = x32.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)  # round to nearest even


def from_bits(bits: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bf16":
        return (bits.astype(np.uint32) << 16).view(np.float32)
    return bits.astype(np.float32)


def variant_positions(variant: str, batch: int, seq: int, rng) -> np.ndarray:
    """(A, B, S) positions of `variant` for a text + video (or image) + text prompt, a different start per sample."""
    from videorope_trt import rope

    layouts = ([("text", 3), ("video", 3, 4, 6), ("text", 2)], [("text", 3), ("image", 4, 6), ("text", 2)])
    rows = []
    for _ in range(batch):
        start = int(rng.integers(0, 5000))
        for segs in layouts:
            try:
                p = rope.position_ids(variant, segs, start=start)
                break
            except ValueError:
                continue
        reps = -(-seq // p.shape[1])  # tile to S tokens, shifted so later copies keep growing
        tiled = np.concatenate([p + i * (p.max() + 1) for i in range(reps)], axis=1)[:, :seq]
        rows.append(tiled)
    return np.stack(rows, axis=1).astype(np.float32)

def compare(y: np.ndarray, ref: np.ndarray, dtype: str) -> dict:
    """Norm-relative error, plus an elementwise bound: one unit in the last place of the dtype at |ref| plus a few
    fp32 rounding steps at the tensor's scale (cancellation in x1 cos - x2 sin). NaN = an element never written."""
    err = np.abs(y.astype(np.float64) - ref)
    scale = float(np.max(np.abs(ref))) or 1.0
    ulp = np.exp2(np.floor(np.log2(np.maximum(np.abs(ref), 1e-30))) - MANTISSA[dtype])
    bound = ulp + 8 * 2.0 ** -24 * scale
    rel = float(np.linalg.norm(np.nan_to_num(y - ref, nan=1e30)) / (np.linalg.norm(ref) or 1.0))
    unwritten = int(np.isnan(y).sum())
    over = int((err > bound).sum())
    return {"rel_l2": rel, "max_abs_err": float(np.nanmax(err)), "unwritten": unwritten, "over_bound": over,
            "passed": unwritten == 0 and over == 0 and rel <= TOLERANCE[dtype]}
