"""`batch` in one process: one JSON line per (video, prompt) with the answer `run` gives, resumable (only missing
and failed keys are answered again, a line cut short is ignored), items with ids and fields of their own."""

import json

import pytest

from videorope_trt.serve.answerer import BatchOptions
from videorope_trt.serve.batch import grid_items, partial_path, run_batch

PROMPTS = ["What moves?", "Describe the video."]
TOKENS = 6


@pytest.fixture
def grid(clips, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n\n")
    return grid_items(clips, prompts)


def options(ckpt):
    return BatchOptions(model=str(ckpt), backend_options={"device": "cpu", "compile": False}, max_new_tokens=TOKENS)


def expected(session, items):
    from videorope_trt.runtime.generate import GenerationConfig

    return {(i["video"], i["prompt"]): session.ask([i["prompt"]], session.load_video(i["video"]),
                                                   GenerationConfig(max_new_tokens=TOKENS)).texts[0] for i in items}


def test_batch_answers_every_pair_and_resumes_only_what_is_missing(tiny_ckpt, session, grid, tmp_path):
    out = tmp_path / "answers.jsonl"
    summary = run_batch(options(tiny_ckpt), grid, out)
    assert summary == {"items": 6, "skipped": 0, "answered": 6, "errors": 0, "lines": 6, "output": str(out)}
    full = out.read_text()
    records = [json.loads(line) for line in full.splitlines()]
    assert [r["key"] for r in records] == sorted(r["key"] for r in records)  # sorted, one per key
    assert {(r["video"], r["prompt"]): r["answer"] for r in records} == expected(session, grid)
    assert all(r["error"] is None and r["video_tokens"] > 0 and 1 <= r["completion_tokens"] <= TOKENS for r in records)
    # an interrupted run: two answers missing, one failed, a line cut short in the partial file
    lines = full.splitlines()
    failed = {**json.loads(lines[3]), "answer": None, "error": "decoding failed"}
    out.write_text("\n".join(lines[:3] + [json.dumps(failed)]) + "\n")
    partial_path(out).write_text(lines[4][: len(lines[4]) // 2])
    again = run_batch(options(tiny_ckpt), grid, out)
    assert (again["skipped"], again["answered"], again["lines"]) == (3, 3, 6)
    assert out.read_text() == full and not partial_path(out).exists()
    assert run_batch(options(tiny_ckpt), grid, out)["answered"] == 0


def test_batch_command_reads_items_with_ids_and_keeps_their_fields(tiny_ckpt, clips, tmp_path, capsys):
    from videorope_trt.cli import main

    items = tmp_path / "items.jsonl"
    rows = [{"id": "q1", "video": str(clips / "a.mp4"), "prompt": PROMPTS[0], "gold": "a circle"},
            {"id": "q2", "video": str(clips / "missing.mp4"), "prompt": PROMPTS[1], "gold": "none"},
            {"id": "q1", "video": str(clips / "a.mp4"), "prompt": PROMPTS[0], "gold": "a circle"}]
    items.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "eval.jsonl"
    argv = ["batch", str(tiny_ckpt), "--items", str(items), "--output", str(out), "--device", "cpu",
            "--max-new-tokens", str(TOKENS)]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert (summary["answered"], summary["errors"], summary["lines"]) == (2, 1, 2)
    got = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert got["q1"]["gold"] == "a circle" and got["q1"]["error"] is None
    assert got["q2"]["answer"] is None and "video file not found" in got["q2"]["error"]
    # `run` answers q1 the same way
    assert main(["run", str(tiny_ckpt), "--video", rows[0]["video"], "--prompt", PROMPTS[0], "--max-new-tokens",
                 str(TOKENS), "--no-progress", "--device", "cpu"]) == 0
    assert capsys.readouterr().out == got["q1"]["answer"] + "\n"
    assert main(argv) == 0  # resumed: only the failed item is tried again
    assert json.loads(capsys.readouterr().err.strip().splitlines()[-1])["answered"] == 1


@pytest.mark.parametrize("argv, message", [
    (["--videos", "DIR"], "--videos DIR and --prompts FILE go together"),
    ([], "give --items FILE, or --videos DIR with --prompts FILE"),
])
def test_batch_command_refuses_incomplete_inputs(tiny_ckpt, tmp_path, capsys, argv, message):
    from videorope_trt.cli import main

    argv = [str(tmp_path) if a == "DIR" else a for a in argv]
    assert main(["batch", str(tiny_ckpt), *argv, "--device", "cpu"]) == 2
    assert message in capsys.readouterr().err
