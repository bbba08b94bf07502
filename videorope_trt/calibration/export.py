"""The quantized model → Q/DQ ONNX through the exporter's own steps (`export.exporter.export_graph`).

    DecoderGraph(model with QDQLinear) ─ torch.onnx (dynamo; VideoRope → one node, Q/DQ ops → QuantizeLinear /
        DequantizeLinear) ─ float type (fp16 | fp32) ─ rotary form ─ decoder.<precision>.onnx (+ .data)
    VisionGraph (only with --quantize-vision; otherwise the float vision.onnx of `export` is used as is)

`float_type` is the type of everything the Q/DQ pairs leave unquantized. Strongly typed TensorRT runs an fp32 graph
with Q/DQ in fp32 outside the quantized GEMMs, so the default is fp16, by the exporter's fp16 converter: it keeps
the Q/DQ nodes where they are and turns their fp32 scales into fp16 scales (TensorRT takes FP32, FP16 or BF16
scales; the scale's type is the dequantized output's type, so the GEMM and what follows run in fp16), while norms,
softmax and the rotation stay fp32 as in every fp16 export.
"""

from __future__ import annotations

from pathlib import Path

FLOAT_TYPES = ("fp16", "fp32")


def _export(model, graph: str, path, *, rotary_form: str = "plugin", float_type: str = "fp16",
            base: dict | None = None) -> dict:
    import onnx

    from videorope_trt.calibration import qdq
    from videorope_trt.export.exporter import ExportConfig, export_graph

    if float_type not in FLOAT_TYPES:
        raise ValueError(f"float type {float_type!r}: expected one of {', '.join(FLOAT_TYPES)}")
    path = Path(path)
    # the artifact's own export settings (parser generation, logits): its graphs all read the same way
    recorded = {k: v for k, v in (base or {}).items() if k in ("logits", "generation")}
    cfg = ExportConfig(rotary_form=rotary_form, precision=float_type, **recorded)
    spec = export_graph(model, graph, path, cfg, translation=qdq.translation_table())
    counts = qdq_counts(onnx.load(str(path), load_external_data=False))
    from videorope_trt.artifact.specs import cache_aliases

    decoder = {"rotary_form": rotary_form, "aliases": cache_aliases(len(model.text_model.layers))}
    return {"file": path.name, "external_data": f"{path.name}.data", "float": float_type, "qdq": counts,
            **(decoder if graph == "decoder" else {}), **spec.to_json()}


def export_decoder(model, path, rotary_form: str = "plugin", float_type: str = "fp16",
                   base: dict | None = None) -> dict:
    """Q/DQ decoder graph of the (quantized) model at `path`, with the artifact's export settings `base` (the
    manifest's "export" record); returns its manifest entry (+ "qdq" counts)."""
    return _export(model, "decoder", path, rotary_form=rotary_form, float_type=float_type, base=base)


def export_vision(model, path, float_type: str = "fp16", base: dict | None = None) -> dict:
    """Vision graph of the (quantized) model at `path`."""
    return _export(model, "vision", path, float_type=float_type, base=base)


def qdq_counts(model) -> dict:
    ops = [n.op_type for n in model.graph.node]
    return {"QuantizeLinear": ops.count("QuantizeLinear"), "DequantizeLinear": ops.count("DequantizeLinear")}
