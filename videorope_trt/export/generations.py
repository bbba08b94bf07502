"""Which ONNX a TensorRT parser reads: the export writes one graph family per parser generation.

    opset20  TensorRT before 10.15 (JetPack 6.2's 10.3 on Orin, JetPack 7.0's 10.13 on Thor): opset 20, the newest
             10.3's parser reads, and no opset-23 operator: torch.onnx writes attention as MatMul/Softmax (the pattern
             TensorRT's multi-head attention fusion looks for) and RMS norm from Pow/ReduceMean/Sqrt. Opset 19 and
             later carry FP8 Q/DQ (Thor has FP8).
    opset23  TensorRT 10.15 and later, 11.x and TensorRT-RTX: ONNX `Attention` and `RMSNormalization` stay native
             (TensorRT's fused layers).

Both read both rotary forms of the decoder's rotate-and-write-the-cache op (plugins/cache_forms.py): the plugin node
and the standard-op local function.

An opset-20 graph also parses on the newer parsers; an opset-23 one does not parse on the older (their operator
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
    Generation("opset20", 20, "TensorRT 10.x before 10.15 (and every later parser)"),
    Generation("opset23", 23, "TensorRT 10.15+, 11.x, TensorRT-RTX"),
]}
#: what `export` writes unless told a target: the graphs every parser the presets name can read
DEFAULT_GENERATION = "opset20"


def get_generation(name: str) -> Generation:
    if name not in GENERATIONS:
        raise ValueError(f"unknown parser generation {name!r}; expected one of {', '.join(GENERATIONS)}")
    return GENERATIONS[name]
