"""`videorope-trt demo` end to end: every step runs and the parity report it writes passes."""

import json

from videorope_trt.cli import main
from videorope_trt.commands import demo


def test_demo_runs_every_step_and_parity_passes(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--seconds", "2"]) == 0
    report = json.loads((out / "artifacts" / "parity" / "report.json").read_text())
    assert report["passed"] is True, report
    text = capsys.readouterr().out
    assert "$ videorope-trt export" in text and "$ videorope-trt validate" in text
    blocker = demo._build_blocker(skip=False)
    if blocker is None:  # TensorRT-RTX and the compiler are here: real engines were built from the plugin form
        engine_dir = out / "artifacts" / "engines" / "rtx"
        assert (engine_dir / "decoder.engine").stat().st_size > 0 and (engine_dir / "engine.json").is_file()
    else:
        assert f"build skipped: {blocker}" in text
