"""Calibration on the tiny checkpoint with real (synthetic MP4) videos: accuracy targets against fp32, the Q/DQ
modules against ModelOpt's own fake quantization, the exported Q/DQ ONNX in ONNX Runtime against PyTorch, the
TensorRT quantization rules in the graph, and the input errors."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("modelopt.torch.quantization")

import onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402

from videorope_trt.calibration import data, export, qdq, quantize, report  # noqa: E402
from videorope_trt.calibration.pipeline import CalibrationConfig, calibrate_model_on, prepare_samples  # noqa: E402
from videorope_trt.cli import main  # noqa: E402

# Targets of the issue (fp32 reference, held-out video); FP8 has no target there, this one is ours.
TARGETS = {"int8-wo": 0.999, "int8-sq": 0.99, "fp8": 0.99}
PROMPTS = ["What happens in the video?", "Describe the moving shapes.", "Which number is shown?"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from videorope_trt.models import make_tiny
    from videorope_trt.runtime.synthetic import make_synthetic_video

    root = tmp_path_factory.mktemp("calibration")
    ckpt = make_tiny(root / "tiny", seed=0)
    videos = root / "videos"
    videos.mkdir()
    for i in range(3):
        make_synthetic_video(videos / f"clip{i}.mp4", seconds=2, fps=4, width=112, height=84, seed=i)
    prompts = root / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n\n")
    return {"ckpt": ckpt, "videos": videos, "prompts": prompts, "root": root}


@pytest.fixture(scope="module")
def samples(inputs):
    cfg = CalibrationConfig("int8-sq", str(inputs["videos"]), str(inputs["prompts"]), prompts_per_video=2)
    return prepare_samples(inputs["ckpt"], cfg)


def _load(inputs):
    from videorope_trt.models import load_model

    return load_model(inputs["ckpt"]).eval()


def test_samples_are_the_runtime_inputs(inputs, samples):
    from videorope_trt.runtime import streaming
    from videorope_trt.runtime.video import ProcessorConfig, load_video

    calib, held = samples
    assert [s.video for s in calib] == ["clip0.mp4"] * 2 + ["clip1.mp4"] * 2 and [s.video for s in held] == ["clip2.mp4"]
    video = load_video(inputs["videos"] / "clip2.mp4", fps=2.0, processor=ProcessorConfig.from_checkpoint(inputs["ckpt"]))
    np.testing.assert_array_equal(held[0].pixel_values, video.pixel_values)
    tok = streaming.load_tokenizer(inputs["ckpt"])
    n = streaming.video_token_count(video.grid_thw)
    assert held[0].input_ids[0].tolist() == streaming.prompt_ids(tok, held[0].prompt, n) and n > 0
    assert held[0].fps == video.fps


@pytest.mark.parametrize("precision", sorted(TARGETS))
def test_accuracy_targets_and_qdq_equals_modelopt(inputs, samples, precision):
    calib, held = samples
    model = _load(inputs)
    reference = report.measure(model, held, 4)
    mode = quantize.get_mode(precision)
    quantize.calibrate_model(model, mode, lambda m: [data.prefill(m, s) for s in calib])
    fake = [data.prefill(model, s)[0].numpy() for s in held]  # ModelOpt's own fake quantization
    assert quantize.to_qdq(model, mode) == 14  # 2 layers x (q, k, v, o, gate, up, down); lm_head stays float
    measured = report.measure(model, held, 4)
    acc = report.compare(reference, measured)
    assert acc["logits_cosine"] >= TARGETS[precision], acc
    assert 0 <= acc["top1_agreement"] <= 1 and acc["greedy_tokens"] == 4
    assert set(acc["layers"]) >= {"layers.0.self_attn.q_proj", "layers.1.mlp.down_proj", "lm_head"}
    # The Q/DQ modules compute what ModelOpt calibrated: only rounding of the scale arithmetic differs.
    assert report.cosine(np.concatenate([m.ravel() for m in measured["logits"]]),
                         np.concatenate([f.ravel() for f in fake])) > 0.9999


def test_quantize_matches_a_literal_reference():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 7)).astype(np.float32) * 3
    scale = np.float32(0.02)
    got = qdq.quantize(torch.from_numpy(x), torch.tensor(scale), qdq.QUANT_TYPES["int8"]).numpy()
    want = [[max(-128, min(127, int(np.round(v / scale)))) for v in row] for row in x]  # round half to even
    np.testing.assert_array_equal(got, np.array(want, np.int8))
    import ml_dtypes

    got8 = qdq.quantize(torch.from_numpy(x), torch.tensor(scale), qdq.QUANT_TYPES["fp8"]).float().numpy()
    want8 = np.clip(x / scale, -448, 448).astype(ml_dtypes.float8_e4m3fn).astype(np.float32)
    np.testing.assert_array_equal(got8, want8)


def _check_trt_rules(path, weight_type):
    """Zero points 0, weights stored quantized and scaled per output channel (axis 0), activations per tensor."""
    model = onnx.load(str(path))
    protos = {i.name: i for i in model.graph.initializer}
    values = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node if n.op_type == "Constant"}
    values.update({name: numpy_helper.to_array(t) for name, t in protos.items()})
    weight_dq = act_q = 0
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        scale = values[node.input[1]]
        if len(node.input) > 2:
            assert not np.any(values[node.input[2]].astype(np.float32)), node.name
        if node.op_type == "DequantizeLinear" and node.input[0] in protos:
            w = protos[node.input[0]]
            assert w.data_type == weight_type and len(w.dims) == 2
            assert {a.name: a.i for a in node.attribute}.get("axis", 1) == 0 and scale.shape == (w.dims[0],)
            weight_dq += 1
        elif node.op_type == "QuantizeLinear":
            assert scale.size == 1
            act_q += 1
    return weight_dq, act_q


def test_export_runs_in_onnx_runtime_and_follows_trt_rules(inputs, samples, tmp_path):
    calib, held = samples
    for precision, expect_act in (("int8-wo", False), ("fp8", True)):
        cfg = CalibrationConfig(precision, str(inputs["videos"]), str(inputs["prompts"]), greedy_tokens=0)
        model = _load(inputs)
        result = calibrate_model_on(model, cfg, calib, held)
        path = tmp_path / f"decoder.{precision}.onnx"
        info = export.export_decoder(model, path)
        assert info["qdq"]["DequantizeLinear"] >= 14 and (info["qdq"]["QuantizeLinear"] > 0) == expect_act
        weight_dq, act_q = _check_trt_rules(path, onnx.TensorProto.INT8 if precision == "int8-wo"
                                            else onnx.TensorProto.FLOAT8E4M3FN)
        assert weight_dq == 14 and (act_q > 0) == expect_act
        feeds = [data.decoder_feed(model, s) for s in held]
        got = report.onnx_logits(path, feeds, 2, (2, 64))
        for g, q, r in zip(got, result["quantized_logits"], result["reference_logits"]):
            assert report.cosine(g, q) > 0.99999  # ONNX Runtime runs the Q/DQ graph as PyTorch does
            np.testing.assert_allclose(g, q, atol=2e-3 * np.abs(q).max(), rtol=0)
            assert report.cosine(g, r) >= TARGETS[precision]


def test_calibrate_command_writes_graph_and_report(inputs, tmp_path, capsys):
    out = tmp_path / "artifact"
    rc = main(["calibrate", str(inputs["ckpt"]), str(out), "--precision", "int8-sq", "--videos", str(inputs["videos"]),
               "--prompts", str(inputs["prompts"]), "--greedy-tokens", "2", "--no-progress", "--target", "orin-nano-8gb"])
    assert rc == 0
    rep = json.loads((out / "calibration" / "report.json").read_text())
    assert rep["precision"] == "int8-sq" and rep["samples"] == {"calibration": 2, "held_out": 1,
                                                               "held_out_videos": ["clip2.mp4"]}
    assert rep["accuracy"]["logits_cosine"] >= TARGETS["int8-sq"]
    assert rep["onnx"]["logits_cosine_vs_torch"] > 0.99999
    assert (out / "decoder.int8-sq.onnx").is_file() and (out / "decoder.int8-sq.onnx.data").is_file()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary left behind
    printed = capsys.readouterr().out
    assert "logits cosine" in printed and "greedy-token agreement" in printed and "layers.1.mlp.down_proj" in printed


@pytest.mark.parametrize("change,message", [
    ({"precision": "int4"}, "unknown precision 'int4'; expected one of int8-sq, int8-wo, fp8"),
    ({"precision": "fp8", "target": "agx-orin-64gb"}, "does not support precision 'fp8'"),
    ({"videos": "EMPTY"}, "holds no video file"),
    ({"prompts": "MISSING"}, "prompts file .* does not exist"),
    ({"prompts": "BLANK"}, "has no prompt"),
    ({"holdout": 3}, "3 video\\(s\\) found, expected more than the 3 held out"),
])
def test_input_errors(inputs, tmp_path, change, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "blank.txt").write_text("\n  \n")
    names = {"EMPTY": str(tmp_path / "empty"), "MISSING": str(tmp_path / "nope.txt"), "BLANK": str(tmp_path / "blank.txt")}
    kwargs = {"precision": "int8-sq", "videos": str(inputs["videos"]), "prompts": str(inputs["prompts"])}
    kwargs.update({k: names.get(v, v) for k, v in change.items()})
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        prepare_samples(inputs["ckpt"], CalibrationConfig(**kwargs))


def test_command_reports_errors_without_traceback(inputs, tmp_path, capsys):
    rc = main(["calibrate", str(inputs["ckpt"]), str(tmp_path / "o"), "--precision", "fp8", "--target", "orin-nx-16gb",
               "--videos", str(inputs["videos"]), "--prompts", str(inputs["prompts"])])
    err = capsys.readouterr().err
    assert rc == 2 and "orin-nx-16gb does not support precision 'fp8'" in err and "no FP8" in err
    assert not (tmp_path / "o").exists()
