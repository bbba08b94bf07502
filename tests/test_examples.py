"""The examples a user copies (examples/) run as written on the tiny checkpoint: the Python API from checkpoint to
answer, export → build → run for a Jetson target (built ahead of time with TensorRT-RTX and answered by ONNX Runtime
here, where there is no TensorRT or GPU), and calibration on a folder of videos."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _env(**more):
    bin_dir = str(Path(sys.executable).parent)  # videorope-trt, as the project's environment installs it
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", **more}


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from videorope_trt.media.synthetic import make_synthetic_video

    return make_synthetic_video(tmp_path_factory.mktemp("clip") / "clip.mp4", seconds=2, fps=4, width=112,
                                height=84).path


def test_python_api_answers_as_run_does(tiny_ckpt, clip, tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "answer_in_python.py"), str(tiny_ckpt), clip,
                          "What moves?", "--out", str(tmp_path / "art")], capture_output=True, text=True, timeout=600,
                         env=_env())
    assert out.returncode == 0, out.stderr[-3000:]
    text, facts = out.stdout.rstrip("\n").rsplit("\n", 1)
    assert facts.startswith("(") and "video tokens" in facts
    from videorope_trt.runtime.generate import GenerationConfig
    from videorope_trt.runtime.session import Session

    session = Session.open(tmp_path / "art", "onnxruntime")
    want = session.ask(["What moves?"], session.load_video(clip), GenerationConfig(max_new_tokens=32)).texts[0]
    assert text == want


@pytest.mark.rtx
@pytest.mark.nvcc
def test_deploy_for_a_jetson_target(tiny_ckpt, clip, tmp_path):
    from videorope_trt import trt
    from videorope_trt.plugins import build as pb

    if not trt.available("rtx"):
        pytest.skip("TensorRT-RTX wheels not installed")
    try:
        pb.find_nvcc()
    except pb.BuildError as e:
        pytest.skip(str(e))
    root = Path(os.environ.get("VIDEOROPE_TRT_HEADERS", ROOT.parent / "shared" / "third_party"))
    headers = root / "tensorrt-11.1.0" / "include"
    if not headers.is_dir():
        pytest.skip(f"TensorRT headers not found at {headers}")
    # the script's own precision (fp16), answered by ONNX Runtime (its fp16 plugin nodes run as the op's definition)
    env = _env(TARGET="orin-nano-8gb", BUILD_TARGET="rtx", BACKEND="onnxruntime",
               OUT=str(tmp_path / "out"), TRT_INCLUDE=str(headers), ARCHS="86",
               BUILD_ARGS="--compute-capabilities 8.6")
    out = subprocess.run(["bash", str(ROOT / "examples" / "deploy.sh"), str(tiny_ckpt), clip], capture_output=True,
                         text=True, timeout=900, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["generation"] == "opset20" and manifest["rotary_form"] == "plugin"  # what JetPack 6.2 parses
    assert manifest["precision"] == "fp16"
    info = json.loads((tmp_path / "out" / "engines" / "rtx" / "engine.json").read_text())
    assert set(info["engines"]) == {"vision", "decoder"} and "[run] done" in out.stderr


def test_calibrate_a_folder_of_videos(tiny_ckpt, tmp_path):
    pytest.importorskip("modelopt", reason="calibration needs NVIDIA ModelOpt (the quant extra)")
    from videorope_trt.media.synthetic import make_synthetic_video

    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(3):
        make_synthetic_video(videos / f"v{i}.mp4", seconds=2, fps=4, width=112, height=84, seed=i)
    (tmp_path / "prompts.txt").write_text("What moves?\nHow many shapes are there?\n")
    env = _env(CALIBRATE_ARGS="--greedy-tokens 2")
    out = subprocess.run(["bash", str(ROOT / "examples" / "calibrate_folder.sh"), str(tiny_ckpt), str(videos),
                          str(tmp_path / "prompts.txt"), str(tmp_path / "out")], capture_output=True, text=True,
                         timeout=900, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "calibration" / "report.json").read_text())
    assert report["precision"] == "int8-sq" and "held-out accuracy" in out.stdout
    # the fp16 plugin-form Q/DQ decoder in ONNX Runtime (its VideoRopeCache nodes as the decomposed definition)
    assert report["onnx"]["logits_cosine_vs_torch"] > 0.999, report["onnx"]
