"""The export targets: every RoPE variant in every rotary form of both parser generations, ONNX Runtime against
PyTorch over a prefill of more than 512 video tokens (the real preprocessing of a generated clip) plus 8 greedy
decode steps; and every graph family checked against the operator table of every TensorRT it is for.

fp32: logits and every present K/V within 1e-5 relative (max |a - b| / max |b|), greedy tokens equal.
fp16 (the graph converted, compared with the fp32 PyTorch model): cosine >= 0.999, greedy tokens equal."""

import pytest

from videorope_trt.export.parity import ParityRequest, validate

from _export_cases import ALL_LOGITS, FORMS, VARIANTS

#: (precision) -> (max relative error, min cosine) that every decoder output must meet over all steps
TARGETS = {"fp32": (1e-5, 0.99999), "fp16": (5e-2, 0.999)}
# 32 s at 2 fps, 112 x 112 frames: 32 temporal slices of 16 merged tokens = 512 video tokens
LONG = dict(layout="text:12,video,text:8", video_seconds=32.0, frame_size=(112, 112), decode_steps=8)


def _check(report, precision):
    max_rel, min_cos = TARGETS[precision]
    assert report["media_tokens"]["video"] >= 512 and report["steps"] == 9
    decoder = [r for r in report["rows"] if not r["output"].startswith("image_embeds")]
    assert {r["output"] for r in decoder} >= {"logits", "key_cache_0_out", "value_cache_1_out"}
    for r in report["rows"]:
        assert r["max_rel"] <= max_rel and r["cosine"] >= min_cos, r
    assert all(report["greedy_tokens_equal"].values()) and report["greedy_tokens_equal"]
    assert report["passed"]


@pytest.mark.parametrize("form,generation", FORMS, ids=[f"{g}-{f}" for f, g in FORMS])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_fp32_targets(exports, variant, form, generation):
    out = exports(variant, form, generation=generation)
    report = validate(ParityRequest(out_dir=str(out), backends=("torch", "onnxruntime"), **LONG))
    _check(report, "fp32")
    assert report["logits"] == ("all" if variant in ALL_LOGITS else "last")


FP16_FORMS = [(f, g) for f, g in FORMS if f == "decomposed"]  # the Python op of the plugin node is fp32 only


@pytest.mark.parametrize("form,generation", FP16_FORMS, ids=[f"{g}-{f}" for f, g in FP16_FORMS])
def test_fp16_targets(exports, form, generation):
    out = exports("videorope", form, "fp16", generation)
    report = validate(ParityRequest(out_dir=str(out), backends=("torch", "onnxruntime"), **LONG))
    _check(report, "fp16")
    assert any(r["output"] == "image_embeds[video]" for r in report["rows"])  # the fp16 vision graph, in ORT
    fp16 = [r for r in report["rows"] if r["output"] == "logits"][0]
    assert fp16["max_rel"] > 1e-6  # it really ran in half precision (an fp32 graph would be ~1e-7)


#: parser generation → the TensorRT versions that read it (the rest must refuse it, naming what they lack)
READERS = {"opset20": {"10.3", "10.13", "10.16", "11.1", "rtx-1.7"}, "opset23": {"10.16", "11.1", "rtx-1.7"}}


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("form,generation", FORMS + (("plugin", "opset23"),), ids=lambda v: str(v))
def test_every_graph_parses_on_the_tensorrt_its_generation_is_for(exports, form, generation, precision):
    """Every graph of each family against every operator table: the parsers its generation is for read every
    operator and the opset; the older parsers refuse an opset-23 graph naming Attention and RMSNormalization."""
    import onnx

    from videorope_trt.build.optables import check_graph, tables

    out = exports("videorope", form, precision, generation)
    for graph in ("vision", "decoder"):
        model = onnx.load(str(out / f"{graph}.onnx"), load_external_data=False)
        assert model.opset_import[0].version == int(generation[5:]) or any(
            o.version == int(generation[5:]) for o in model.opset_import if o.domain in ("", "ai.onnx"))
        for version, table in tables().items():
            problems = check_graph(model, table)
            if version in READERS[generation]:
                assert problems == [], (graph, version, problems)
            else:
                assert "operator Attention" in problems, (graph, version, problems)
                if graph == "decoder":
                    assert "operator RMSNormalization" in problems
