"""The user's path through the commands, as a new user walks it on a CPU machine: make-tiny → export → validate →
calibrate → build (TensorRT-RTX, ahead of time) → run on each backend. Every backend answers with the artifact's own
variant, δ and precision; re-export, an interrupted build, a mismatched checkpoint and a cut video are refused or
cleaned up, never silently used.

One test walks the path in order (each step builds on the one before, and pytest-xdist would give each test of a
module-scoped fixture its own copy of the path); the checkpoint is made with δ = 0.5, not VideoRoPE's default 2, so
that a δ silently replaced shows. About a minute on one core.
"""

import json
import shutil

import numpy as np
import pytest

from videorope_trt import trt as T
from videorope_trt.cli import main

PROMPT = "What moves?"
DELTA = 0.5


def _cli(capfd, *args):
    """(exit status, stdout, stderr) of one command."""
    rc = main([str(a) for a in args])
    out, err = capfd.readouterr()
    return rc, out, err


def _answer(capfd, out, clip, *backend):
    rc, text, err = _cli(capfd, "run", out, *backend, "--video", clip, "--prompt", PROMPT, "--max-new-tokens", 6,
                         "--no-progress")
    assert rc == 0, err
    return text


def _inputs(root, capfd):
    """The checkpoint (δ = 0.5), two short clips (one calibrates, one is held out) and the prompts."""
    ckpt, videos = root / "ckpt", root / "videos"
    assert _cli(capfd, "make-tiny", ckpt, "--delta", DELTA)[0] == 0
    for seed in (0, 1):
        assert _cli(capfd, "make-video", videos / f"clip{seed}.mp4", "--seconds", 2, "--size", "112x84",
                    "--seed", seed)[0] == 0
    (root / "prompts.txt").write_text(f"{PROMPT}\nDescribe the video.\n")
    return ckpt, videos


def _export(capfd, ckpt, out, *variant):
    rc, text, err = _cli(capfd, "export", ckpt, out, *variant, "--target", "rtx", "--rotary-form", "plugin")
    assert rc == 0 and "torchvision is not installed" not in err, err
    return json.loads((out / "manifest.json").read_text())


def _export_and_validate(capfd, ckpt, out):
    """`--variant videorope` names the checkpoint's own variant: its δ = 0.5 is kept and recorded (it became the
    default 2, recorded nowhere, and validate passed)."""
    manifest = _export(capfd, ckpt, out, "--variant", "videorope")
    assert manifest["rope"]["variant"] == "videorope" and manifest["rope"]["delta"] == DELTA
    assert manifest["precision"] == "fp32"
    rc, text, _ = _cli(capfd, "validate", out, "--backends", "torch,onnxruntime", "--video-seconds", 2,
                       "--decode-steps", 2)
    assert rc == 0 and "polygraphy comparator: pass" in text


def _calibrate_and_build(capfd, ckpt, out, videos, root, plugin):
    """int8-wo with fp32 around its Q/DQ: the plugin node's ONNX Runtime kernel is fp32 only, and `run` checks it."""
    rc, _, err = _cli(capfd, "calibrate", ckpt, out, "--precision", "int8-wo", "--videos", videos, "--prompts",
                      root / "prompts.txt", "--target", "rtx", "--rotary-form", "plugin", "--float", "fp32",
                      "--greedy-tokens", 1, "--no-progress")
    assert rc == 0, err
    graphs = json.loads((out / "manifest.json").read_text())["graphs"]
    assert {g: e["precision"] for g, e in graphs.items()} == {"vision": "fp32", "decoder": "fp32",
                                                             "decoder.int8-wo": "int8-wo"}
    if not T.available("rtx") or plugin is None:
        return None
    rc, printed, err = _cli(capfd, "build", out, "--target", "rtx", "--graphs", "vision", "decoder.int8-wo",
                            "--max-context", 512, "--prefill-chunk", 64, "--frames-per-chunk", 2,
                            "--compute-capabilities", "8.6", "--plugin", plugin)
    assert rc == 0 and "Int64 binding" not in printed + err, err
    return out / "engines" / "rtx"


def _backends_answer_with_the_artifacts_model(capfd, out, clip, engines):
    """torch (the checkpoint's weights), ONNX Runtime (the float and the calibrated decoder) and TensorRT (the engines
    engine.json lists) all run videorope with δ = 0.5 at the artifact's precision."""
    import torch

    from videorope_trt.artifact import engine_info as EI
    from videorope_trt.artifact.manifest import read_manifest
    from videorope_trt.runtime.backends.artifact_model import model_info
    from videorope_trt.runtime.session import Session

    want = ("videorope", {"delta": DELTA})
    runs = {"torch": Session.open(out, "torch", device="cpu"), "onnxruntime": Session.open(out, "onnxruntime"),
            "int8": Session.open(out, "onnxruntime", decoder="decoder.int8-wo")}
    for name, s in runs.items():
        assert (s.info.variant, s.info.position_params) == want, name
    assert runs["torch"].backend.dtype == torch.float32 and runs["onnxruntime"].backend.kv_type is np.float32
    assert runs["int8"].backend.decoder._model_path.endswith("decoder.int8-wo.onnx")  # the calibrated graph
    torch_answer = _answer(capfd, out, clip, "--backend", "torch", "--device", "cpu")
    assert torch_answer == _answer(capfd, out, clip, "--backend", "onnxruntime")
    _answer(capfd, out, clip, "--backend", "onnxruntime", "--decoder", "decoder.int8-wo")
    if engines is None:
        return
    manifest, info = read_manifest(out), EI.read_engine_info(engines)
    chosen = EI.select_engines(info, engines)  # what the TensorRT backend opens
    assert chosen == {"vision": "vision", "decoder": "decoder.int8-wo"}
    EI.check_engine_sources(info, engines, out, chosen.values())
    assert info["engines"]["decoder.int8-wo"]["precision"] == manifest["graphs"]["decoder.int8-wo"]["precision"]
    assert (model_info(manifest).variant, model_info(manifest).position_params) == want
    if not torch.cuda.is_available():  # the engines need a GPU to run: the backend says so, and nothing else runs
        rc, _, err = _cli(capfd, "run", out, "--backend", "tensorrt", "--prompt", PROMPT, "--no-progress")
        assert rc == 2 and "has no CUDA GPU" in err


def _mismatches_are_refused(capfd, out, ckpt, root):
    other = shutil.copytree(ckpt, root / "other")
    (other / "config.json").write_text((other / "config.json").read_text().replace("{", '{"note": 1, ', 1))
    rc, _, err = _cli(capfd, "run", out, "--backend", "torch", "--checkpoint", other, "--prompt", PROMPT,
                      "--no-progress")
    assert rc == 2 and f"checkpoint {other} is not the one {out} was exported from" in err
    rc, _, err = _cli(capfd, "validate", out, "--checkpoint", other, "--backends", "torch,onnxruntime")
    assert rc == 2 and "is not the one" in err
    rc, _, err = _cli(capfd, "run", out, "--backend", "onnxruntime", "--checkpoint", ckpt, "--prompt", PROMPT)
    assert rc == 2 and "--checkpoint applies to the torch backend" in err
    data = out / "decoder.onnx.data"
    data.rename(root / "kept.data")
    try:
        missing = "decoder.onnx.data, the weights of the decoder graph decoder.onnx, is missing"
        rc, _, err = _cli(capfd, "run", out, "--backend", "onnxruntime", "--prompt", PROMPT, "--no-progress")
        assert rc == 2 and missing in err and "Traceback" not in err
        rc, _, err = _cli(capfd, "validate", out, "--backends", "torch,onnxruntime", "--video-seconds", 2,
                          "--decode-steps", 1)
        assert rc == 2 and missing in err and "Traceback" not in err
    finally:
        (root / "kept.data").rename(data)


def _a_cut_video_is_refused(capfd, out, root):
    """A download stopped midway: 6 s of video declared, 3 s there (it was answered from those, without a word)."""
    from videorope_trt.media.synthetic import cut_short, make_synthetic_video

    clip = make_synthetic_video(root / "long.mp4", seconds=6, fps=4, width=112, height=84).path
    cut = cut_short(clip, root / "cut.mp4")
    rc, _, err = _cli(capfd, "run", out, "--backend", "onnxruntime", "--video", cut, "--prompt", PROMPT)
    assert rc == 2 and "the file looks cut short or damaged" in err and "--allow-truncated-video" in err
    rc, text, err = _cli(capfd, "run", out, "--backend", "onnxruntime", "--video", cut, "--prompt", PROMPT,
                         "--allow-truncated-video", "--max-new-tokens", 2, "--no-progress")
    assert rc == 0 and "[run] warning:" in err and "planned frames were read; answering from those" in err


def _an_interrupted_build_keeps_the_last(capfd, out, engines, monkeypatch, plugin):
    from videorope_trt.build import engine as B

    before = {p.name: p.read_bytes() for p in engines.iterdir()}
    real = B.build_engine

    def interrupted(trt, onnx_path, *args, **kwargs):
        if onnx_path.name.startswith("decoder"):
            raise KeyboardInterrupt  # Ctrl-C while the decoder builds, the vision engine already written
        return real(trt, onnx_path, *args, **kwargs)

    monkeypatch.setattr(B, "build_engine", interrupted)
    rc, _, err = _cli(capfd, "build", out, "--target", "rtx", "--max-context", 256, "--prefill-chunk", 32,
                      "--frames-per-chunk", 2, "--compute-capabilities", "8.6", "--plugin", plugin)
    monkeypatch.undo()
    assert rc == 130 and err.endswith("videorope-trt build: interrupted\n")
    assert {p.name: p.read_bytes() for p in engines.iterdir()} == before
    assert sorted(p.name for p in engines.parent.iterdir()) == ["rtx"]  # no temporary folder left


def _reexport_replaces_the_directory(capfd, ckpt, out, clip):
    """Another variant into the same folder: engines, parity, calibration and the Q/DQ graphs (all made from the old
    graphs) go; the plugin folder stays; every backend runs the new variant."""
    (out / "plugins").mkdir()
    (out / "plugins" / "libvideorope_trt_plugins.so").write_bytes(b"built on this machine")
    manifest = _export(capfd, ckpt, out, "--variant", "vrope")
    assert manifest["rope"]["variant"] == "vrope" and set(manifest["graphs"]) == {"vision", "decoder"}
    left = sorted(p.name for p in out.iterdir())
    assert not {"engines", "parity", "calibration", "decoder.int8-wo.onnx"} & set(left), left
    assert (out / "plugins" / "libvideorope_trt_plugins.so").read_bytes() == b"built on this machine"
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".")]
    assert _answer(capfd, out, clip, "--backend", "torch", "--device", "cpu") == \
        _answer(capfd, out, clip, "--backend", "onnxruntime")
    from videorope_trt.runtime.session import Session

    assert Session.open(out, "torch", device="cpu").info.variant == "vrope"


def test_the_user_path(tmp_path, capfd, monkeypatch, request):
    try:  # the engines' VideoRopeCache plugin, compiled with nvcc against TensorRT's headers
        plugin = request.getfixturevalue("plugin_library")
    except pytest.skip.Exception:
        plugin = None
    ckpt, videos = _inputs(tmp_path, capfd)
    clip, out = videos / "clip0.mp4", tmp_path / "out"
    _export_and_validate(capfd, ckpt, out)
    engines = _calibrate_and_build(capfd, ckpt, out, videos, tmp_path, plugin)
    _backends_answer_with_the_artifacts_model(capfd, out, clip, engines)
    _mismatches_are_refused(capfd, out, ckpt, tmp_path)
    _a_cut_video_is_refused(capfd, out, tmp_path)
    if engines is not None:
        _an_interrupted_build_keeps_the_last(capfd, out, engines, monkeypatch, plugin)
    else:
        pytest.skip("TensorRT-RTX wheels or nvcc and TensorRT's headers missing: the build steps did not run")
    _reexport_replaces_the_directory(capfd, ckpt, out, clip)
