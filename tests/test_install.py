"""`pip install .` alone gives a working tool: in a fresh virtual environment with only what pyproject.toml declares
(no lock file), it writes the tiny checkpoint, exports it in fp16 and answers with ONNX Runtime.

The CPU build of torch is installed first, as the Makefile does: a bare `torch` requirement would otherwise fetch the
CUDA build."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _torch_requirement() -> str:
    for line in (ROOT / "Makefile").read_text().splitlines():
        if line.startswith("TORCH :="):
            return line.split(":=", 1)[1].strip()
    raise AssertionError("the Makefile names no TORCH")


def _not_sources(folder, names) -> set:
    """What the copy of the repository leaves out: at its root, hidden folders (.git, .venv) and earlier build
    outputs; everywhere, bytecode caches. (videorope_trt/build/ is a package: only the root's build/ is output.)"""
    skip = {"__pycache__"}
    if Path(folder) == ROOT:
        skip |= {n for n in names if n.startswith(".") or n in ("build", "demo-out") or n.endswith(".egg-info")}
    return skip


@pytest.mark.slow
def test_pip_install_of_the_package_alone_exports_fp16_and_runs(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}

    def run(*args, timeout=900):
        out = subprocess.run([py, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)
        assert out.returncode == 0, f"{args}: {out.stdout[-2000:]}\n{out.stderr[-3000:]}"
        return out

    run("-m", "pip", "install", "-q", _torch_requirement())
    # from a copy: building the wheel writes build/ and *.egg-info into the source tree
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=_not_sources)
    run("-m", "pip", "install", "-q", str(src))
    tool = [str(venv / "bin" / "videorope-trt")]
    for step in (["make-tiny", "ckpt"], ["make-video", "clip.mp4", "--seconds", "2", "--size", "112x84"],
                 ["export", "ckpt", "out", "--precision", "fp16", "--rotary-form", "decomposed"]):
        done = subprocess.run(tool + step, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900)
        assert done.returncode == 0, f"{step}: {done.stderr[-3000:]}"
    out = subprocess.run(tool + ["run", "out", "--backend", "onnxruntime", "--video", "clip.mp4", "--prompt",
                                 "What moves?", "--max-new-tokens", "4", "--no-progress"],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "[run] done" in out.stderr and (tmp_path / "out" / "embeddings.safetensors").is_file()
