"""End to end on the tiny checkpoint: export (atomic, manifest, bad input), validate against PyTorch through
Polygraphy, and TensorRT-RTX parses and builds both graphs ahead of time on the CPU."""

import json

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from videorope_trt.export.exporter import ExportConfig, export_checkpoint  # noqa: E402
from videorope_trt.export.parity import ParityRequest, validate  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from videorope_trt.models import make_tiny

    return make_tiny(tmp_path_factory.mktemp("export") / "tiny", seed=0)


@pytest.fixture(scope="module", params=[("native", "fp32"), ("decomposed", "fp16")], ids=lambda p: "-".join(p))
def exported(request, tiny, tmp_path_factory):
    form, precision = request.param
    out = tmp_path_factory.mktemp("art") / f"{form}-{precision}"
    manifest = export_checkpoint(tiny, out, ExportConfig(rotary_form=form, precision=precision))
    return out, manifest


def test_manifest_and_graphs(exported):
    out, manifest = exported
    assert manifest["rope"]["variant"] == "videorope" and manifest["rope"]["delta"] == 2.0
    dec = onnx.load(str(out / "decoder.onnx"), load_external_data=False)
    assert [i.name for i in dec.graph.input] == [t["name"] for t in manifest["graphs"]["decoder"]["inputs"]]
    dims = [d.dim_param for d in dec.graph.output[1].type.tensor_type.shape.dim]
    assert dims[0] == "batch" and dims[2] == "total"
    assert (out / "decoder.onnx.data").stat().st_size > 1_000_000  # weights live in external data
    assert not any(p.name.startswith(".") for p in out.parent.iterdir())  # no temporary left behind


def test_validate_parity(exported):
    out, manifest = exported
    report = validate(ParityRequest(out_dir=str(out), backends=("torch", "onnxruntime"), video_seconds=4.0,
                                    decode_steps=3))
    assert report["passed"], report["rows"]
    logits = next(r for r in report["rows"] if r["output"] == "logits")
    bound = 1e-5 if manifest["precision"] == "fp32" else 5e-2
    assert logits["max_rel"] <= bound and logits["cosine"] >= 0.999
    saved = json.loads((out / "parity" / "report.json").read_text())
    assert saved["steps"] == 4 and (out / "parity" / "error_per_output.png").stat().st_size > 1000
    from polygraphy.comparator import RunResults

    assert len(RunResults.load(str(out / "parity" / "torch_outputs.json"))[0][1]) == 4


def test_bad_inputs_leave_nothing(tiny, tmp_path):
    (tmp_path / "notqwen").mkdir()
    (tmp_path / "notqwen" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="model_type='llama'"):
        export_checkpoint(tmp_path / "notqwen", tmp_path / "o1")
    with pytest.raises(ValueError, match="unknown"):
        export_checkpoint(tiny, tmp_path / "o2", ExportConfig(variant="no_such_rope"))
    with pytest.raises(ValueError, match="rotary form 'fused' is unknown"):
        ExportConfig(rotary_form="fused")
    with pytest.raises(ValueError, match="delta must be a positive number"):
        ExportConfig(delta=-1.0)
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps({"kind": "videorope-trt-export", "format_version": 1,
                                                     "source": {"sha256": "0" * 64}}))
    with pytest.raises(FileExistsError, match="another checkpoint"):
        export_checkpoint(tiny, other)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notqwen", "other"]


@pytest.mark.rtx
def test_tensorrt_rtx_builds(exported):
    from videorope_trt.runtime import trt as trt_mod

    if not trt_mod.available("rtx"):
        pytest.skip("TensorRT-RTX wheels not installed")
    trt = trt_mod.import_trt("rtx")
    trt_mod.ensure_rtx_parser_library(trt)
    out, manifest = exported
    if manifest["precision"] == "fp16":
        pytest.xfail("known open defect: the fp16 graph still holds an fp32 x fp16 Mul (node_mul_12) that "
                     "TensorRT's strongly typed parser rejects; ONNX Runtime accepts it")
    sizes = {"num_patches": (4, 48, 256), "batch": (1, 1, 2), "seq": (1, 16, 64), "past": (0, 16, 64),
             "total": (1, 32, 128)}
    for graph in ("vision", "decoder"):
        logger = trt.Logger(trt.Logger.ERROR)
        builder = trt.Builder(logger)
        network = builder.create_network(trt_mod.strongly_typed_flags(trt))
        parser = trt.OnnxParser(network, logger)
        assert parser.parse_from_file(str(out / f"{graph}.onnx")), [parser.get_error(i) for i in range(parser.num_errors)]
        for i in range(network.num_layers):  # fp32 attention has no fused kernel: let TensorRT decompose it
            layer = network.get_layer(i)
            if layer.type == trt.LayerType.ATTENTION_INPUT:
                layer.__class__ = trt.IAttentionInputLayer
                layer.attention.decomposable = True
        config = builder.create_builder_config()
        config.num_compute_capabilities = 1
        config.set_compute_capability(trt_mod.compute_capability_enum(trt, "8.6"), 0)
        profile = builder.create_optimization_profile()
        for t in manifest["graphs"][graph]["inputs"]:
            shapes = [tuple(sizes[d][k] if isinstance(d, str) else d for d in t["shape"]) for k in range(3)]
            profile.set_shape(t["name"], *shapes)
        config.add_optimization_profile(profile)
        engine = builder.build_serialized_network(network, config)
        assert engine is not None and engine.nbytes > 1000, graph
