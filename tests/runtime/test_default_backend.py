"""Which backend runs a directory when none is named: an artifact's engines where they can run, else ONNX Runtime on
its graphs (both read only the artifact), PyTorch for a checkpoint."""

import json

from videorope_trt import trt
from videorope_trt.artifact.engine_info import write_engine_info
from videorope_trt.commands import main
from videorope_trt.runtime.backends.base import default_backend


def _artifact(tmp_path, engines=None):
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": 2}))
    for target, flavour in (engines or {}).items():
        (tmp_path / "engines" / target).mkdir(parents=True)
        write_engine_info(tmp_path / "engines" / target, {"target": target, "flavour": flavour})
    return tmp_path


def test_checkpoint_runs_on_torch(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert default_backend(tmp_path) == ("torch", "a checkpoint directory")


def test_artifact_without_engines_runs_on_onnxruntime(tmp_path):
    name, why = default_backend(_artifact(tmp_path))
    assert name == "onnxruntime" and "without engines" in why
    (tmp_path / "engines" / "h200").mkdir(parents=True)  # a folder a build left without engine.json is no build
    assert default_backend(tmp_path)[0] == "onnxruntime"


def test_engines_run_where_their_tensorrt_and_a_gpu_are(tmp_path, monkeypatch):
    art = _artifact(tmp_path, {"orin-nx-16gb": "tensorrt"})
    monkeypatch.setattr(trt, "available", lambda flavour: False)
    name, why = default_backend(art)
    assert name == "onnxruntime" and "tensorrt is not installed" in why and "orin-nx-16gb" in why
    monkeypatch.setattr(trt, "available", lambda flavour: flavour == "tensorrt")
    monkeypatch.setattr(trt, "current_gpu", lambda: None)
    name, why = default_backend(art)
    assert name == "onnxruntime" and "no CUDA GPU" in why
    monkeypatch.setattr(trt, "current_gpu", lambda: {"name": "Orin", "compute_capability": "8.7"})
    assert default_backend(art)[0] == "tensorrt"


def test_the_named_target_decides(tmp_path, monkeypatch):
    art = _artifact(tmp_path, {"rtx": "rtx", "h200": "tensorrt"})
    monkeypatch.setattr(trt, "available", lambda flavour: flavour == "tensorrt")
    monkeypatch.setattr(trt, "current_gpu", lambda: {"name": "H200", "compute_capability": "9.0"})
    assert default_backend(art, "h200")[0] == "tensorrt"
    assert default_backend(art, "rtx")[0] == "onnxruntime"
    assert default_backend(art, "thor")[0] == "onnxruntime"  # nothing built for it


def test_run_says_which_backend_it_chose(tmp_path, capsys):
    # the choice is printed before the artifact is opened: this manifest is refused right after
    code = main(["run", str(_artifact(tmp_path)), "--prompt", "hi", "--no-progress"])
    err = capsys.readouterr().err
    assert "[run] backend onnxruntime: an artifact without engines" in err
    assert code == 2 and "error:" in err
