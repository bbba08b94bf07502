"""Calibration on the tiny checkpoint with real (synthetic MP4) videos: accuracy targets against fp32, the Q/DQ
modules against ModelOpt's own fake quantization, the exported Q/DQ ONNX (fp32 and fp16 around the Q/DQ) in ONNX
Runtime against PyTorch, the TensorRT quantization rules in the graph, the graphs registered in manifest.json and
built by TensorRT-RTX through `videorope-trt build`, and the input errors."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("modelopt.torch.quantization")

# below the skips: without those packages this module is skipped rather than failing to import
import onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402

from videorope_trt.calibration import data, qdq, quantize, report  # noqa: E402
from videorope_trt.calibration.pipeline import CalibrationConfig, prepare_samples  # noqa: E402
from videorope_trt.cli import main  # noqa: E402

# Accuracy targets against the fp32 reference on a held-out video; FP8's is this project's own.
TARGETS = {"int8-wo": 0.999, "int8-sq": 0.99, "fp8": 0.99}
PROMPTS = ["What happens in the video?", "Describe the moving shapes.", "Which number is shown?"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from videorope_trt.media.synthetic import make_synthetic_video
    from videorope_trt.models import make_tiny

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
    from videorope_trt.media import prompt
    from videorope_trt.media.video import ProcessorConfig, load_video

    calib, held = samples
    assert [s.video for s in calib] == ["clip0.mp4"] * 2 + ["clip1.mp4"] * 2
    assert [s.video for s in held] == ["clip2.mp4"]
    processor = ProcessorConfig.from_checkpoint(inputs["ckpt"])
    video = load_video(inputs["videos"] / "clip2.mp4", fps=2.0, processor=processor)
    np.testing.assert_array_equal(held[0].pixel_values, video.pixel_values)
    tok = prompt.load_tokenizer_json(inputs["ckpt"])
    n = prompt.video_token_count(video.grid_thw)
    assert held[0].input_ids[0].tolist() == prompt.prompt_ids(tok, held[0].prompt, n) and n > 0
    assert held[0].fps == video.fps


@pytest.mark.parametrize("precision", sorted(TARGETS))
def test_accuracy_targets_and_qdq_equals_modelopt(inputs, samples, precision):
    calib, held = samples
    model = _load(inputs)
    reference = report.measure(model, held, 4)
    mode = quantize.get_mode(precision)
    quantize.calibrate_model(model, mode, lambda m: [data.prompt_logits(m, s) for s in calib])
    fake = [data.prompt_logits(model, s)[0].numpy() for s in held]  # ModelOpt's own fake quantization
    assert quantize.to_qdq(model, mode) == 14  # 2 layers x (q, k, v, o, gate, up, down); lm_head stays float
    measured = report.measure(model, held, 4)
    acc = report.compare(reference, measured)
    assert acc["logits_cosine"] >= TARGETS[precision], acc
    assert 0 <= acc["top1_agreement"] <= 1 and acc["greedy_tokens"] == 4
    assert set(acc["layers"]) >= {"layers.0.self_attn.q_proj", "layers.1.mlp.down_proj", "lm_head"}
    # The Q/DQ modules compute what ModelOpt calibrated: only rounding of the scale arithmetic differs.
    assert report.cosine(np.concatenate([m.ravel() for m in measured["logits"]]),
                         np.concatenate([f.ravel() for f in fake])) > 0.9999


def test_quantized_vision_tower_exports_its_qdq_and_runs_in_onnx_runtime(inputs, samples, tmp_path):
    """--quantize-vision: calibration reaches the tower's linears through the model's vision call (the written-out
    tower calls every linear that is not a plain nn.Linear as a module), and the exported vision graph carries their
    Q/DQ: in ONNX Runtime, one call per grid, it computes what the quantized PyTorch tower computes."""
    from videorope_trt.artifact.vision_inputs import slice_pos_ids, vision_calls
    from videorope_trt.calibration import export

    calib, held = samples
    model = _load(inputs)
    mode = quantize.get_mode("int8-sq")
    quantize.calibrate_model(model, mode, lambda m: [data.prompt_logits(m, s) for s in calib], quantize_vision=True)
    # the decoder's 14, and per vision block qkv, proj, fc1, fc2 (2 blocks) plus the merger's two
    assert quantize.to_qdq(model, mode) == 14 + 2 * 4 + 2
    pixels = np.concatenate([held[0].pixel_values, calib[0].pixel_values[:16]])  # a video and a 4x4 "image"
    grids = np.array([held[0].grid_thw, [1, 4, 4]])
    with torch.no_grad():
        ref = model.vision(torch.from_numpy(pixels), torch.from_numpy(grids)).numpy()
    entry = export.export_vision(model, tmp_path / "vision.int8-sq.onnx", float_type="fp32")
    assert entry["qdq"] == {"QuantizeLinear": 10, "DequantizeLinear": 20}  # an activation and a weight each
    assert [i["name"] for i in entry["inputs"]] == ["pixel_values", "slice_pos_ids"]
    sess = ort.InferenceSession(str(tmp_path / "vision.int8-sq.onnx"), providers=["CPUExecutionProvider"])
    got = np.concatenate([sess.run(None, {"pixel_values": pixels[c.start:c.stop],
                                          "slice_pos_ids": slice_pos_ids(c.h, c.w, 2)})[0]
                          for c in vision_calls(grids, 2)])
    # as for the decoder's fp32 Q/DQ graphs: a value on a rounding boundary of an activation quantizer may round one
    # step the other way in ONNX Runtime (its sums run in another order), which moves the tokens downstream of it;
    # every other row is equal
    assert report.cosine(got.ravel(), ref.ravel()) > 0.99999 and np.mean(np.all(got == ref, axis=1)) > 0.9


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


def _check_trt_rules(path, weight_type, scale_type):
    """Zero points 0, weights stored quantized and scaled per output channel (axis 0), activations per tensor,
    scales of the graph's float type."""
    model = onnx.load(str(path))
    protos = {i.name: i for i in model.graph.initializer}
    values = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node
              if n.op_type == "Constant" and n.attribute[0].name == "value"}
    values.update({name: numpy_helper.to_array(t) for name, t in protos.items()})
    weight_dq = act_q = 0
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        scale = values[node.input[1]]
        assert scale.dtype == scale_type, (node.name, scale.dtype)
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
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    act_gemms = sum(producer.get(n.input[0]) == "DequantizeLinear" for n in model.graph.node if n.op_type == "MatMul")
    return weight_dq, act_q, act_gemms


# precision → (float type around the Q/DQ, quantized weight type, activations quantized)
ARTIFACT = {"int8-wo": ("fp32", onnx.TensorProto.INT8, False), "fp8": ("fp16", onnx.TensorProto.FLOAT8E4M3FN, True),
            "int8-sq": ("fp16", onnx.TensorProto.INT8, True)}


@pytest.fixture(scope="module")
def artifact(inputs, tmp_path_factory):
    """One artifact directory: int8-wo through the command (a new directory: the float vision graph and the
    manifest come first), then fp8 and int8-sq through the library into the same directory."""
    from videorope_trt.calibration.pipeline import calibrate_checkpoint

    out = tmp_path_factory.mktemp("artifact") / "out"
    rc = main(["calibrate", str(inputs["ckpt"]), str(out), "--precision", "int8-wo", "--videos", str(inputs["videos"]),
               "--prompts", str(inputs["prompts"]), "--greedy-tokens", "2", "--no-progress", "--target", "rtx",
               "--rotary-form", "plugin", "--float", "fp32"])
    assert rc == 0
    reports = {"int8-wo": json.loads((out / "calibration" / "report.json").read_text())}
    for precision in ("fp8", "int8-sq"):
        cfg = CalibrationConfig(precision, str(inputs["videos"]), str(inputs["prompts"]), greedy_tokens=0,
                                rotary_form="decomposed", float_type=ARTIFACT[precision][0])
        reports[precision] = calibrate_checkpoint(inputs["ckpt"], out, cfg)
    return out, reports


def test_calibrated_graphs_are_registered_in_the_manifest(inputs, artifact):
    from videorope_trt.artifact.manifest import checkpoint_sha256, read_manifest

    out, reports = artifact
    manifest = read_manifest(out)
    assert set(manifest["graphs"]) == {"vision", "decoder.int8-wo", "decoder.fp8", "decoder.int8-sq"}
    assert manifest["source"]["sha256"] == checkpoint_sha256(inputs["ckpt"])
    assert manifest["graphs"]["vision"]["precision"] == "fp32"  # made by the first calibrate, with its --float fp32
    for precision, (float_type, _, _) in ARTIFACT.items():
        entry = manifest["graphs"][f"decoder.{precision}"]
        assert entry["file"] == f"decoder.{precision}.onnx"
        assert entry["external_data"] == f"decoder.{precision}.onnx.data"
        form = "plugin" if precision == "int8-wo" else "decomposed"  # the plugin's ONNX Runtime op is fp32 only
        assert entry["precision"] == precision and entry["float"] == float_type and entry["rotary_form"] == form
        assert (out / entry["file"]).is_file() and (out / entry["external_data"]).stat().st_size > 100_000
        graph = onnx.load(str(out / entry["file"]), load_external_data=False).graph
        assert [i["name"] for i in entry["inputs"]] == [i.name for i in graph.input if i.name not in
                                                       {t.name for t in graph.initializer}]
        assert [o["name"] for o in entry["outputs"]] == [o.name for o in graph.output]
        # the embeddings and K/V cross the graph boundary in the float type around the Q/DQ pairs
        want = {"fp32": "float32", "fp16": "float16"}[float_type]
        assert entry["inputs"][0] == {"name": "inputs_embeds", "dtype": want, "shape": ["batch", "seq", 256]}
        assert [o for o in entry["outputs"] if o["name"] == "logits"][0]["dtype"] == "float32"
        assert entry["calibration"]["logits_cosine"] == reports[precision]["accuracy"]["logits_cosine"]
    rep = reports["int8-wo"]
    assert rep["samples"] == {"calibration": 2, "held_out": 1, "held_out_videos": ["clip2.mp4"]}
    assert rep["accuracy"]["logits_cosine"] >= TARGETS["int8-wo"]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary left behind
    printed = report.table(rep)
    assert "logits cosine" in printed and "greedy-token agreement" in printed and "layers.1.mlp.down_proj" in printed


@pytest.mark.parametrize("precision", sorted(ARTIFACT))
def test_qdq_graphs_follow_trt_rules_and_run_in_onnx_runtime(artifact, precision):
    out, reports = artifact
    float_type, weight_type, act = ARTIFACT[precision]
    weight_dq, act_q, act_gemms = _check_trt_rules(out / f"decoder.{precision}.onnx", weight_type,
                                                   np.float16 if float_type == "fp16" else np.float32)
    # Every quantized GEMM reads a Q/DQ activation; GEMMs of one input with one scale (q/k/v, gate/up under FP8,
    # no smoothing) share one Q/DQ pair after the exporter's common-subexpression pass: 4 per layer, up to 7.
    assert weight_dq == 14 and act_gemms == (14 if act else 0) and (8 <= act_q <= 14 if act else act_q == 0)
    o = reports[precision]["onnx"]
    # fp32 around the Q/DQ: ONNX Runtime computes what PyTorch computes. fp16: the unquantized ops round to fp16,
    # which costs far less than the quantization itself (docs/benchmark-log.md, "Calibration").
    assert o["logits_cosine_vs_torch"] > (0.99999 if float_type == "fp32" else 0.998), o
    assert o["logits_cosine_vs_float"] >= TARGETS[precision] - (0 if float_type == "fp32" else 0.001), o


def _build_args(out, target, *graphs, extra=()):
    return ["build", str(out), "--target", target, "--graphs", *graphs, "--max-context", "1024",
            "--prefill-chunk", "128", "--frames-per-chunk", "2", *extra]


@pytest.mark.rtx
@pytest.mark.nvcc
def test_tensorrt_rtx_builds_the_quantized_graphs(artifact, plugin_library, capsys):
    """TensorRT-RTX (ahead of time, no GPU) parses and builds every quantized decoder: int8-wo (plugin form, its
    caches written in place) beside the float vision graph through the command, fp8 for compute capabilities 8.9
    and 12.0 only, int8-sq by the builder itself (the rtx preset does not offer it: TensorRT-RTX documents INT8
    GEMMs as weight-only); the last two are in the decomposed form, which an engine build refuses, so they go
    through `build_engine` directly."""
    from videorope_trt import trt as T
    from videorope_trt.build import engine as B
    from videorope_trt.build.plan import PlanRequest, plan_memory
    from videorope_trt.build.presets import get_preset

    if not T.available("rtx"):
        pytest.skip("TensorRT-RTX wheels not installed (requirements/rtx.txt)")
    out, _ = artifact
    assert main(_build_args(out, "rtx", "vision", "decoder.int8-wo",
                            extra=["--compute-capabilities", "8.6", "--plugin", str(plugin_library)])) == 0
    assert "decoder.int8-wo: decoder.int8-wo.engine" in capsys.readouterr().out
    info = json.loads((out / "engines" / "rtx" / "engine.json").read_text())
    assert info["precision"] == "int8-wo" and info["compute_capabilities"] == ["8.6"]
    assert {g: e["precision"] for g, e in info["engines"].items()} == {"vision": "fp32", "decoder.int8-wo": "int8-wo"}
    assert [p["name"] for p in info["engines"]["decoder.int8-wo"]["profiles"]] == ["prefill", "decode"]
    engine_bytes = (out / "engines" / "rtx" / "decoder.int8-wo.engine").stat().st_size
    assert engine_bytes == info["engines"]["decoder.int8-wo"]["bytes"]

    plan = PlanRequest(precision="fp8", max_context=1024, prefill_chunk=128, frames_per_chunk=2)
    with pytest.raises(ValueError, match="fp8 graph cannot be built for compute capability 8.0 8.6 .*"
                                         "pass --compute-capabilities 8.9 12.0"):
        B.build_engines(out, B.BuildRequest("rtx", plan, graphs=("decoder.fp8",)))
    with pytest.raises(ValueError, match="target rtx does not support precision 'int8-sq'"):
        B.build_engines(out, B.BuildRequest("rtx", PlanRequest(precision="int8-sq"), graphs=("decoder.int8-sq",)))
    preset, trt = get_preset("rtx"), T.import_trt("rtx")
    for graph, ccs in (("decoder.fp8", ("8.9", "12.0")), ("decoder.int8-sq", ("8.6",))):
        path = out / f"{graph}.onnx"
        plan = plan_memory(B.manifest_model(B.read_manifest(out)), preset,
                           PlanRequest(max_context=1024, prefill_chunk=128))
        profiles = B.profile_shapes(B.onnx_inputs(path), graph, plan)
        assert len(B.build_engine(trt, path, profiles, preset, T.get_flavour("rtx"), ccs, None)) > 100_000


def test_build_checks_the_graph_precision_against_the_target(artifact, capsys):
    from videorope_trt import trt as T

    out, _ = artifact
    assert main(_build_args(out, "orin-nano-8gb", "vision", "decoder.fp8")) == 2
    assert "orin-nano-8gb does not support precision 'fp8' (no FP8" in capsys.readouterr().err
    if T.available("tensorrt"):
        pytest.skip("full TensorRT is installed: an Orin build would start")
    # INT8 passes the target's precision check; the graphs were calibrated for TensorRT-RTX (opset 23), which
    # Orin's TensorRT cannot parse: refused before any work, naming what it lacks and the export that fixes it
    assert main(_build_args(out, "orin-nano-8gb", "vision", "decoder.int8-sq")) == 2
    err = capsys.readouterr().err
    assert "TensorRT 10.3 (JetPack 6.2, Jetson Orin) cannot parse these graphs" in err
    assert "decoder.int8-sq: opset 23" in err and "vision: operator Attention" in err and "--trt 10.3" in err


def test_another_checkpoints_directory_is_refused(inputs, tmp_path):
    from videorope_trt.artifact.manifest import write_manifest
    from videorope_trt.calibration import artifact as art

    write_manifest(tmp_path, {"source": {"sha256": "0" * 64}, "graphs": {}})
    with pytest.raises(FileExistsError, match="holds the export of another checkpoint"):
        art.check_out_dir(tmp_path, inputs["ckpt"])
    (tmp_path / "manifest.json").unlink()
    (tmp_path / "notes.txt").write_text("unrelated")
    with pytest.raises(FileExistsError, match="is not empty and has no manifest.json"):
        art.check_out_dir(tmp_path, inputs["ckpt"])


def test_graphs_of_one_directory_share_its_rope():
    from videorope_trt.calibration import artifact as art

    manifest = {"rope": {"variant": "videorope", "delta": 2.0}, "export": {"variant": None, "delta": 2.0}}
    assert art.rope_arguments(manifest, None) == {"variant": "videorope", "rope_params": {"delta": 2.0}}
    with pytest.raises(ValueError, match="variant 'm_rope': the export in this directory uses 'videorope'"):
        art.rope_arguments(manifest, "m_rope")


def test_smoothquant_alpha_reaches_modelopt():
    assert quantize.modelopt_config(quantize.MODES["int8-sq"])["algorithm"] == {"method": "smoothquant", "alpha": 0.5}
    assert quantize.modelopt_config(quantize.MODES["int8-sq"], alpha=1.0)["algorithm"]["alpha"] == 1.0
    assert quantize.modelopt_config(quantize.MODES["int8-wo"])["algorithm"] == "max"
    with pytest.raises(ValueError, match="for a SmoothQuant mode"):
        quantize.modelopt_config(quantize.MODES["fp8"], alpha=0.5)


@pytest.mark.parametrize("change,message", [
    ({"precision": "int4"}, "unknown precision 'int4'; expected one of int8-sq, int8-wo, fp8"),
    ({"videos": "EMPTY"}, "holds no video file"),
    ({"prompts": "MISSING"}, "prompts file .* does not exist"),
    ({"prompts": "BLANK"}, "has no prompt"),
    ({"holdout": 3}, "3 video\\(s\\) found, expected more than the 3 held out"),
    ({"alpha": 1.5}, "alpha 1.5 with precision 'int8-sq': expected a number in \\[0, 1\\]"),
    ({"precision": "fp8", "alpha": 0.5}, "only for int8-sq"),
    ({"float_type": "bf16"}, "float type 'bf16' is unknown; expected one of fp16, fp32"),
])
def test_input_errors(inputs, tmp_path, change, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "blank.txt").write_text("\n  \n")
    names = {"EMPTY": str(tmp_path / "empty"), "MISSING": str(tmp_path / "nope.txt"),
             "BLANK": str(tmp_path / "blank.txt")}
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
