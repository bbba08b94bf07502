"""The command line's own behaviour, whatever the command: its version, Ctrl-C, and the help texts that state
defaults."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

import videorope_trt
from videorope_trt.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_the_packages():
    out = subprocess.run([sys.executable, "-m", "videorope_trt.cli", "--version"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == f"videorope-trt {videorope_trt.__version__}"
    declared = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert videorope_trt.__version__ == declared


def test_ctrl_c_is_one_line_and_status_130(monkeypatch, capsys):
    from videorope_trt.commands import media

    def interrupted(args, name):
        raise KeyboardInterrupt

    monkeypatch.setattr(media, "run", interrupted)
    assert main(["make-video", "x.mp4"]) == 130
    out, err = capsys.readouterr()
    assert out == "" and err == "videorope-trt make-video: interrupted\n"


def test_an_interrupted_export_leaves_nothing(tiny_ckpt, tmp_path, monkeypatch, capsys):
    """Ctrl-C in the middle of writing the graphs: no artifact directory, no temporary folder."""
    from videorope_trt.export import exporter

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(exporter, "_write_graph", interrupted)
    assert main(["export", str(tiny_ckpt), str(tmp_path / "out")]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command,defaults", [
    ("export", ["default fp32", "default plugin"]),
])
def test_help_states_the_defaults(command, defaults):
    out = subprocess.run([sys.executable, "-m", "videorope_trt.cli", command, "--help"], capture_output=True,
                         text=True, timeout=300)
    text = " ".join(out.stdout.split())  # argparse wraps lines
    for default in defaults:
        assert default in text, default
