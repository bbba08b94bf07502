"""The quantized model → Q/DQ ONNX through the exporter's own wrapper modules and rotary forms.

    DecoderGraph(model with QDQLinear) ─ torch.onnx (dynamo; VideoRope → one node, Q/DQ ops → QuantizeLinear /
        DequantizeLinear) ─ rotary form ─ decoder.<precision>.onnx (+ .data)
    VisionGraph (only with --quantize-vision; otherwise the float vision.onnx of `export` is used as is)

Files are written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path


def translation_table() -> dict:
    from videorope_trt.calibration import qdq
    from videorope_trt.export import rotary

    return {**rotary.translation_table(), **qdq.translation_table()}


def _torch_to_onnx(module, args, spec, dynamic_shapes, tmp: Path):
    import onnx
    import torch

    from videorope_trt.export.exporter import OPSET

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(module, args, dynamo=True, opset_version=OPSET, input_names=spec.input_names,
                                 output_names=spec.output_names, dynamic_shapes=dynamic_shapes,
                                 custom_translation_table=translation_table(), verbose=False)
    prog.save(str(tmp), external_data=True)
    model = onnx.load(str(tmp))
    tmp.unlink()
    Path(str(tmp) + ".data").unlink(missing_ok=True)
    _name_dims(model, spec)
    return model


def _name_dims(model, spec) -> None:
    """The spec's symbolic dim names on the graph inputs/outputs (torch.onnx names some dims like 's29')."""
    by_name = {t.name: t for t in spec.inputs + spec.outputs}
    for value in list(model.graph.input) + list(model.graph.output):
        t = by_name.get(value.name)
        for d, want in zip(value.type.tensor_type.shape.dim, t.dims if t else ()):
            if isinstance(want, str):
                d.Clear()
                d.dim_param = want


def save_atomic(model, path: Path) -> None:
    """Write `path` and its `path.data` in a temporary sibling directory, check, then move both into place."""
    import shutil
    import tempfile

    import onnx

    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        onnx.save_model(model, str(tmp / path.name), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=1024)
        onnx.checker.check_model(str(tmp / path.name))  # by path: works with external data and over 2 GB
        os.replace(tmp / (path.name + ".data"), Path(str(path) + ".data"))
        os.replace(tmp / path.name, path)  # the graph last: it is what readers look for
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def export_decoder(model, path, rotary_form: str = "plugin") -> dict:
    """Q/DQ decoder graph of the (quantized) model at `path`; returns {"file", "qdq": counts}."""
    from videorope_trt.export import decoder as dec
    from videorope_trt.export import rotary
    from videorope_trt.export.specs import decoder_spec

    path = Path(path)
    dims = dec.model_dims(model)
    spec = decoder_spec(dims)
    onnx_model = _torch_to_onnx(dec.DecoderGraph(model).eval(), dec.example_inputs(dims), spec,
                                dec.dynamic_shapes(dims), path.with_name(f".{path.stem}.raw.onnx"))
    if rotary.rotary_node_count(onnx_model) != 2 * dims.num_layers:
        raise RuntimeError(f"decoder export: expected {2 * dims.num_layers} VideoRope nodes (q and k per layer), "
                           f"found {rotary.rotary_node_count(onnx_model)}")
    rotary.switch_form(onnx_model, rotary_form)
    save_atomic(onnx_model, path)
    return {"file": path.name, "rotary_form": rotary_form, "qdq": qdq_counts(onnx_model), **spec.to_json()}


def export_vision(model, path) -> dict:
    """Vision graph of the (quantized) model at `path`."""
    import torch

    from videorope_trt.export.decoder import model_dims
    from videorope_trt.export.specs import vision_spec
    from videorope_trt.export.vision import VisionGraph, example_grid, host_inputs

    path = Path(path)
    dims = model_dims(model)
    spec = vision_spec(dims)
    grid = example_grid(dims.spatial_merge_size)
    host = host_inputs(grid, dims.spatial_merge_size)
    pixels = torch.randn(int(grid.prod(1).sum()), dims.patch_dim, generator=torch.Generator().manual_seed(0))
    n = torch.export.Dim("num_patches", min=dims.spatial_merge_size**2)
    args = (pixels, torch.from_numpy(host["rotary_pos_ids"]), torch.from_numpy(host["segment_ids"]))
    onnx_model = _torch_to_onnx(VisionGraph(model.visual).eval(), args, spec, ({0: n}, {0: n}, {0: n}),
                                path.with_name(f".{path.stem}.raw.onnx"))
    save_atomic(onnx_model, path)
    return {"file": path.name, "qdq": qdq_counts(onnx_model), **spec.to_json()}


def qdq_counts(model) -> dict:
    ops = [n.op_type for n in model.graph.node]
    return {"QuantizeLinear": ops.count("QuantizeLinear"), "DequantizeLinear": ops.count("DequantizeLinear")}
