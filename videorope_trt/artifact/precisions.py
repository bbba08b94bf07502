"""The precisions an artifact's graphs can have: one registry that export, calibration, the memory plan, the
presets and the build all read.

Strongly typed engines take their types from the ONNX, so a precision names the ONNX that was written (an FP32 or
FP16 graph from `export`, or Q/DQ over FP16 from `calibrate`), never a builder flag. Only precisions some stage
produces are listed: the plan never counts bytes for a graph nobody can make.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Precision:
    name: str
    made_by: str  # the command that writes graphs of this precision: "export" or "calibrate"
    weight_bytes: float  # per parameter of a quantized GEMM weight (the float type's size when not quantized)
    act_bytes: int  # activations, norms, embeddings and everything left in float
    float_type: str  # numpy name of the graph's float type (I/O, KV cache, unquantized ops)
    needs_fp8: bool = False  # FP8 tensor cores (compute capability 8.9 and newer; not Orin)
    description: str = ""


PRECISIONS = {p.name: p for p in [
    Precision("fp32", "export", 4, 4, "float32", description="FP32 graph"),
    Precision("fp16", "export", 2, 2, "float16", description="FP16 graph (norm statistics, softmax, rotation in FP32)"),
    Precision("int8-sq", "calibrate", 1, 2, "float16", description="INT8 SmoothQuant W8A8 (Q/DQ on GEMM inputs)"),
    Precision("int8-wo", "calibrate", 1, 2, "float16", description="INT8 weight-only (Q/DQ weights, FP16 activations)"),
    Precision("fp8", "calibrate", 1, 2, "float16", needs_fp8=True, description="FP8 E4M3 W8A8 (Q/DQ on GEMM inputs)"),
]}

#: Bytes per element of the float types graphs and caches use.
FLOAT_BYTES = {"float32": 4, "float16": 2}


def get_precision(name: str, made_by: str | None = None) -> Precision:
    """The precision `name`, or a ValueError listing the known ones (those `made_by` writes, when given)."""
    known = {k: p for k, p in PRECISIONS.items() if made_by is None or p.made_by == made_by}
    if name not in known:
        others = sorted(set(PRECISIONS) - set(known))
        hint = f" ({', '.join(others)} come from `videorope-trt {PRECISIONS[others[0]].made_by}`)" if others else ""
        raise ValueError(f"unknown precision {name!r}; expected one of {', '.join(known)}{hint}")
    return known[name]


def names(made_by: str | None = None) -> list:
    return [k for k, p in PRECISIONS.items() if made_by is None or p.made_by == made_by]
