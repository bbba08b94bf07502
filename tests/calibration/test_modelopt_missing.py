"""`calibrate` on a machine without NVIDIA ModelOpt: one clear error with the install command, before any work
(it used to fail with ModuleNotFoundError after its videos were decoded). Runs whether ModelOpt is installed or not."""

import re
import sys
from pathlib import Path

from videorope_trt.cli import main

LOCK = Path(__file__).resolve().parents[2] / "requirements" / "lock.txt"


def test_calibrate_without_modelopt_says_how_to_install_it_first(tiny_ckpt, tmp_path, monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "modelopt" or m.startswith("modelopt.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "modelopt", None)  # `import modelopt` fails, as where it is not installed
    (tmp_path / "videos").mkdir()  # no video at all: the ModelOpt check comes before the inputs are read
    (tmp_path / "prompts.txt").write_text("What moves?\n")
    rc = main(["calibrate", str(tiny_ckpt), str(tmp_path / "out"), "--precision", "int8-sq", "--videos",
               str(tmp_path / "videos"), "--prompts", str(tmp_path / "prompts.txt")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("videorope-trt calibrate: error: calibration needs NVIDIA ModelOpt"), err
    assert "pip install 'videorope-trt[quant]'" in err and "Traceback" not in err
    pinned = re.search(r"^nvidia-modelopt==(\S+)$", LOCK.read_text(), re.M)[1]
    assert f"pip install nvidia-modelopt=={pinned} requests" in err  # the hint names the version the lock pins
    assert not (tmp_path / "out").exists()
