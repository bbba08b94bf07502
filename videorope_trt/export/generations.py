"""Which ONNX a TensorRT parser reads: the export writes one graph family per parser generation.

    opset18  TensorRT before 10.15 (JetPack 6.2's 10.3 on Orin, JetPack 7.0's 10.13 on Thor): no opset-23
             operator. torch.onnx writes attention as MatMul/Softmax (the pattern TensorRT's multi-head attention
             fusion looks for) and RMS norm from Pow/ReduceMean/Sqrt.
    opset23  TensorRT 10.15 and later, 11.x and TensorRT-RTX: ONNX `Attention` and `RMSNormalization` stay native
             (TensorRT's fused layers).

Both read both rotary forms of the decoder's rotate-and-write-the-cache op (export/cache_op.py): the plugin node
and the standard-op local function (opset 18 and later).

An opset-18 graph also parses on the newer parsers; an opset-23 one does not parse on the older (their operator
tables: `build/optables`). Which generation a target needs is the build layer's knowledge; the export is told.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Generation:
    name: str
    opset: int
    parsers: str  # who reads it, for messages and the manifest


GENERATIONS = {g.name: g for g in [
    Generation("opset18", 18, "TensorRT 10.x before 10.15 (and every later parser)"),
    Generation("opset23", 23, "TensorRT 10.15+, 11.x, TensorRT-RTX"),
]}
#: what `export` writes unless told a target: the graphs every parser the presets name can read
DEFAULT_GENERATION = "opset18"


def get_generation(name: str) -> Generation:
    if name not in GENERATIONS:
        raise ValueError(f"unknown parser generation {name!r}; expected one of {', '.join(GENERATIONS)}")
    return GENERATIONS[name]
