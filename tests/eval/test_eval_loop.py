"""The whole evaluation loop on the tiny checkpoint on the CPU: `videorope-trt eval` runs ONNX Runtime and PyTorch
on the same trials and they give the same answer to every one; a rerun resumes (only new trials are asked), a results
file made otherwise is refused; and the comparison mode tells a deployment with the wrong RoPE variant apart while
accuracy cannot (the tiny model's weights are random: it answers noise, never a letter)."""

import json

import pytest

from videorope_trt.cli import main as cli_main

SMALL = ["--size", "64x48", "--lengths", "4,8", "--depths", "0,1", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def artifact(tiny_ckpt, tmp_path_factory):
    from videorope_trt.export.exporter import ExportConfig, export_checkpoint

    out = tmp_path_factory.mktemp("eval-art") / "out"
    export_checkpoint(tiny_ckpt, out, ExportConfig(rotary_form="decomposed"))
    return out


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tasks")
    defs = {"niah": {"generate": {"kind": "niah"}},
            "niah_d": {"generate": {"kind": "niah"}, "distractors": {"period": 4}},
            "count": {"generate": {"kind": "counting", "needles": 2}}}
    for name, body in defs.items():
        (folder / f"{name}.json").write_text(json.dumps({"name": name, **body}))
    return ",".join(str(folder / f"{n}.json") for n in defs)


def _records(path):
    lines = path.read_text().splitlines()
    return json.loads(lines[0])["header"], [json.loads(line) for line in lines[1:]]


def _compare(artifact, tasks, out):
    """onnxruntime (a) against torch (b) on one artifact: 3 tasks × 2 lengths × 2 depths."""
    return cli_main(["eval", str(artifact), "--backend", "onnxruntime", "--compare-backend", "torch", "--tasks", tasks,
                     "--results", str(out), *SMALL])


def _check_alike(out):
    header, records = _records(out / "results.jsonl")
    assert {k: v["backend"] for k, v in header["deployments"].items()} == {"a": "onnxruntime", "b": "torch"}
    assert len(records) == 12 and len({r["trial"] for r in records}) == 12
    for r in records:
        a, b = r["answers"]["a"], r["answers"]["b"]
        assert a["text"] == b["text"] and r["agree"] == {"answer": True, "text": True}, r["trial"]
        assert a["video_tokens"] == b["video_tokens"] > 0
        inserted = sum(end - start for start, end in r["needles"] + r["distractors"])
        assert r["video_frames"] == r["frames"] + inserted
        assert (len(r["distractors"]) > 0) == (r["task"] == "niah_d" and r["frames"] == 8)  # period 4: inside 8
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["agreement"] == 1.0 and summary["overall"]["same_text"] == 1.0
    for name, entry in summary["tasks"].items():
        rs = [r for r in records if r["task"] == name]
        assert entry["runners"]["a"]["accuracy"] == sum(r["answers"]["a"]["correct"] for r in rs) / len(rs)
        assert (out / f"heatmap_{name}.png").is_file()


def _resume(out, artifact, tasks):
    """Rerun through the library with a grid one depth larger: only the new trials are asked."""
    from videorope_trt.eval.runner import Deployment, EvalSettings, evaluate
    from videorope_trt.eval.spec import load_tasks
    from videorope_trt.eval.trials import Grid
    from videorope_trt.runtime.generate import GenerationConfig
    from videorope_trt.runtime.session import Session

    header, before = _records(out / "results.jsonl")
    asked, deployments = [], []
    for label, backend in (("a", "onnxruntime"), ("b", "torch")):
        session = Session.open(artifact, backend, device="cpu")
        ask = session.ask
        session.ask = lambda *a, _ask=ask, **k: asked.append(1) or _ask(*a, **k)
        description = header["deployments"][label]
        deployments.append(Deployment(label, session, GenerationConfig(max_new_tokens=8),
                                      {k: description[k] for k in ("path", "backend", "options")}))
    grid = Grid(lengths=(4,), depths=(0.0, 0.5))  # (4, 0) was answered; (4, 0.5) is new
    summary = evaluate(load_tasks(tasks.split(",")), deployments, EvalSettings(grid, (64, 48)), out, progress=False)
    assert len(asked) == 3 * 2  # three new trials, two deployments each
    _, after = _records(out / "results.jsonl")
    assert after[:12] == before and len(after) == 15
    assert summary["tasks"]["niah"]["depths"] == [0.0, 0.5] and summary["tasks"]["niah"]["lengths"] == [4]
    return after


def test_loop_onnxruntime_and_torch_alike_resumable(artifact, tasks, tiny_ckpt, tmp_path, capsys):
    """One test, not three: the trials it answers first are the ones the rerun must skip (and the tests of one
    module may run on different workers, each paying for the export)."""
    assert _compare(artifact, tasks, tmp_path) == 0
    _check_alike(tmp_path)
    after = _resume(tmp_path, artifact, tasks)
    # another deployment b: refused, nothing written
    rc = cli_main(["eval", str(artifact), "--backend", "onnxruntime", "--compare", str(tiny_ckpt),
                   "--compare-backend", "torch", "--tasks", tasks, "--results", str(tmp_path), *SMALL])
    assert rc == 2 and "holds results made otherwise (deployments.b.path" in capsys.readouterr().err
    assert _records(tmp_path / "results.jsonl")[1] == after


def test_agreement_finds_a_wrong_variant_that_accuracy_cannot(tiny_ckpt, tmp_path):
    from videorope_trt.eval.runner import Deployment, EvalSettings, evaluate
    from videorope_trt.eval.spec import task_from_dict
    from videorope_trt.eval.trials import Grid
    from videorope_trt.runtime.generate import GenerationConfig
    from videorope_trt.runtime.session import Session

    config = GenerationConfig(max_new_tokens=8)
    right = Session.open(tiny_ckpt, "torch", device="cpu")
    wrong = Session.open(tiny_ckpt, "torch", device="cpu", variant="m_rope")  # the checkpoint was made for videorope
    task = task_from_dict({"name": "niah", "generate": {"kind": "niah"}})
    summary = evaluate([task], [Deployment("a", right, config), Deployment("b", wrong, config)],
                       EvalSettings(Grid((4, 8), (0.0, 0.5, 1.0)), (64, 48)), tmp_path, progress=False)
    entry = summary["tasks"]["niah"]
    assert entry["runners"]["a"]["accuracy"] == entry["runners"]["b"]["accuracy"] == 0.0  # noise either way
    assert entry["agreement"]["answer"] < 1.0 and entry["agreement"]["disagreements"]
    assert summary["header"]["deployments"]["b"]["variant"] == "m_rope"


@pytest.mark.parametrize("extra, message", [
    (["--compare", "."], "the second deployment is the first one again"),
    (["--backend", "onnxruntime", "--dtype", "float32"], "--dtype applies to the torch backend"),
    (["--tasks", "v_niah,nope"], "task 'nope': no such file and no shipped task of that name"),
    (["--size", "65x48"], "expected even sides >= 16"),
])
def test_command_line_mistakes_are_reported(extra, message, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert cli_main(["eval", ".", *extra]) == 2
    assert message in capsys.readouterr().err
