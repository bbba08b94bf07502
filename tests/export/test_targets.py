"""The export targets: every RoPE variant in every rotary form, ONNX Runtime against PyTorch over a prefill of
more than 512 video tokens (the real preprocessing of a generated clip) plus 8 greedy decode steps.

fp32: logits and every present K/V within 1e-5 relative (max |a - b| / max |b|), greedy tokens equal.
fp16 (the graph converted, compared with the fp32 PyTorch model): cosine >= 0.999, greedy tokens equal."""

import pytest

from _export_cases import LAST_ONLY, VARIANTS

from videorope_trt.export.parity import ParityRequest, validate

#: (precision) -> (max relative error, min cosine) that every decoder output must meet over all steps
TARGETS = {"fp32": (1e-5, 0.99999), "fp16": (5e-2, 0.999)}
FORMS = ("plugin", "native", "decomposed")
# 32 s at 2 fps, 112 x 112 frames: 32 temporal slices of 16 merged tokens = 512 video tokens
LONG = dict(layout="text:12,video,text:8", video_seconds=32.0, frame_size=(112, 112), decode_steps=8)


def _check(report, precision):
    max_rel, min_cos = TARGETS[precision]
    assert report["media_tokens"]["video"] >= 512 and report["steps"] == 9
    decoder = [r for r in report["rows"] if not r["output"].startswith("image_embeds")]
    assert {r["output"] for r in decoder} >= {"logits", "present_key_0", "present_value_1"}
    for r in report["rows"]:
        assert r["max_rel"] <= max_rel and r["cosine"] >= min_cos, r
    assert all(report["greedy_tokens_equal"].values()) and report["greedy_tokens_equal"]
    assert report["passed"]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_fp32_targets(exports, variant, form):
    out = exports(variant, form)
    report = validate(ParityRequest(out_dir=str(out), backends=("torch", "onnxruntime"), **LONG))
    _check(report, "fp32")
    assert report["logits"] == ("last" if variant in LAST_ONLY else "all")


@pytest.mark.parametrize("form", FORMS)
def test_fp16_targets(exports, form):
    out = exports("videorope", form, "fp16")
    report = validate(ParityRequest(out_dir=str(out), backends=("torch", "onnxruntime"), **LONG))
    _check(report, "fp16")
    assert any(r["output"] == "image_embeds[video]" for r in report["rows"])  # the fp16 vision graph, in ORT
    fp16 = [r for r in report["rows"] if r["output"] == "logits"][0]
    assert fp16["max_rel"] > 1e-6  # it really ran in half precision (an fp32 graph would be ~1e-7)
