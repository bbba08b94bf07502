"""The `positions` command prints the rows `position_ids` computes."""

import numpy as np

from videorope_trt.cli import main
from videorope_trt.rope import parse_layout, position_ids


def test_positions_command_prints_rows(capsys):
    layout = "text:3,video:2x2x3,image:1x2,text:2"
    assert main(["positions", "--variant", "videorope", "--layout", layout, "--delta", "1.5"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [[float(x) for x in line.split(":")[1].split()] for line in out[1:4]]
    np.testing.assert_array_equal(rows, position_ids("videorope", parse_layout(layout), delta=1.5))
    assert "tokens 19, rows 3" in out[4] and "decode step 1" in out[4]


def test_positions_command_bad_layout(capsys):
    assert main(["positions", "--layout", "video:2x0x3"]) == 2
    assert "h must be positive, got 0" in capsys.readouterr().err
    assert main(["positions", "--layout", "text"]) == 2
    assert "expected kind:sizes" in capsys.readouterr().err
