"""The results file (resume, a cut-short last line, refusal of other settings, --force) and the summary and heatmaps
over hand-made records, checked for their numbers: each panel's image holds the cell means worked out by hand."""

import json
import re

import numpy as np
import pytest

from videorope_trt.eval.results import ResultsLog
from videorope_trt.eval.summary import heatmap_figure, panels, summarize, write_outputs

HEADER = {"format": 1, "deployments": {"a": {"backend": "torch"}}, "tasks": {"t": "abc"}}


def _record(trial, depth, frames, a, b=None, lured=None, task="t"):
    answers = {"a": {"text": "A" if a else "C", "choice": "A" if a else "C", "correct": a}}
    if lured is not None:
        answers["a"]["lured"] = lured
    record = {"trial": trial, "task": task, "depth": depth, "frames": frames, "answers": answers}
    if b is not None:
        answers["b"] = {"text": "A" if b else "D", "choice": "A" if b else "D", "correct": b}
        record["agree"] = {"answer": a == b, "text": a == b}
    return record


def test_log_resumes_and_drops_a_cut_short_record(tmp_path):
    path = tmp_path / "results.jsonl"
    log = ResultsLog(path, HEADER)
    log.append(_record("t/0", 0.0, 8, True))
    log.append(_record("t/1", 1.0, 8, False))
    with open(path, "a") as f:
        f.write('{"trial": "t/2", "ta')  # interrupted mid-write
    again = ResultsLog(path, HEADER)
    assert list(again.records) == ["t/0", "t/1"] and "t/0" in again and "t/2" not in again
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0]) == {"header": HEADER}  # the broken line is gone


def test_log_refuses_other_settings_unless_forced(tmp_path):
    path = tmp_path / "results.jsonl"
    ResultsLog(path, HEADER).append(_record("t/0", 0.0, 8, True))
    other = {**HEADER, "deployments": {"a": {"backend": "onnxruntime"}}}
    message = '(deployments.a.backend: "torch" in the file, "onnxruntime" now); pass --force'
    with pytest.raises(ValueError, match=re.escape(message)):
        ResultsLog(path, other)
    assert ResultsLog(path, other, force=True).records == {}
    assert path.read_text().count("\n") == 1
    (tmp_path / "foreign.jsonl").write_text('{"x": 1}\n')
    with pytest.raises(ValueError, match="not a results file"):
        ResultsLog(tmp_path / "foreign.jsonl", HEADER)


def test_summary_and_heatmap_hold_the_hand_worked_means():
    # depths 0 and 1 × lengths 8 and 16; two trials per cell except (1, 16), which has none
    records = [_record("1", 0.0, 8, True, True), _record("2", 0.0, 8, False, True),
               _record("3", 0.0, 16, True, True), _record("4", 0.0, 16, True, True),
               _record("5", 1.0, 8, False, False), _record("6", 1.0, 8, False, True),
               _record("7", 0.5, 99, True, True, task="other")]
    summary = summarize(records, ["t"], ["a", "b"])
    entry = summary["tasks"]["t"]
    assert entry["lengths"] == [8, 16] and entry["depths"] == [0.0, 1.0] and entry["trials"] == 6
    assert entry["runners"]["a"] == {"accuracy": 3 / 6, "grid": [[0.5, 1.0], [0.0, None]]}
    assert entry["runners"]["b"]["grid"] == [[1.0, 1.0], [0.5, None]]
    assert entry["agreement"]["grid"] == [[0.5, 1.0], [0.5, None]] and entry["agreement"]["answer"] == 4 / 6
    assert entry["agreement"]["disagreements"] == ["2", "6"]
    assert summary["overall"] == {"a": 4 / 7, "b": 6 / 7, "agreement": 5 / 7, "same_text": 5 / 7}
    fig = heatmap_figure("t", entry)
    images = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    expected = [[[0.5, 1.0], [0.0, np.nan]], [[1.0, 1.0], [0.5, np.nan]], [[0.5, 1.0], [0.5, np.nan]]]
    assert len(images) == 3
    for image, values in zip(images, expected):
        np.testing.assert_array_equal(np.asarray(image.filled(np.nan)), np.array(values))
    assert [title for title, _ in panels(entry)] == ["a: accuracy", "b: accuracy", "agreement (same answer)"]
    lured = summarize([_record("1", 0.0, 8, False, lured=True), _record("2", 0.0, 8, True, lured=False)], ["t"], ["a"])
    assert lured["tasks"]["t"]["runners"]["a"]["lured"] == 0.5 and "agreement" not in lured["tasks"]["t"]


def test_outputs_written(tmp_path):
    summary = summarize([_record("1", 0.0, 8, True)], ["t", "empty"], ["a"])
    paths = write_outputs(summary, tmp_path)
    assert sorted(p.name for p in paths) == ["heatmap_t.png", "summary.json"]  # no heatmap for a task without trials
    assert json.loads((tmp_path / "summary.json").read_text())["tasks"]["t"]["runners"]["a"]["grid"] == [[1.0]]
    assert (tmp_path / "heatmap_t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
