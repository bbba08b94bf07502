"""What a generation may not silently exceed: the model's position limit (a prompt longer than
max_position_embeddings, or than what its RoPE scaling extends it to, is refused unless asked for), and, for
`bench`, the contexts the positions and this machine's memory plan hold, refused before anything is allocated."""

import json
import shutil

import pytest

from videorope_trt.cli import main
from videorope_trt.rope.scalings import context_limit

SHORT = 96  # the position limit of the short-context copy of the tiny checkpoint


@pytest.fixture(scope="module")
def short_ckpt(tiny_ckpt, tmp_path_factory):
    """The tiny checkpoint, told it holds 96 positions."""
    ckpt = shutil.copytree(tiny_ckpt, tmp_path_factory.mktemp("short") / "ckpt")
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["max_position_embeddings"] = SHORT
    (ckpt / "config.json").write_text(json.dumps(cfg))
    return ckpt


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from videorope_trt.media.synthetic import make_synthetic_video

    return make_synthetic_video(tmp_path_factory.mktemp("clip") / "clip.mp4", seconds=2, fps=4, width=112,
                                height=84).path


def _run(ckpt, clip, *extra):
    return main(["run", str(ckpt), "--video", str(clip), "--prompt", "What moves?", "--no-progress", "--device",
                 "cpu", "--max-new-tokens", "4", *extra])


def test_a_prompt_past_the_position_limit_is_refused_unless_asked_for(short_ckpt, clip, capsys, monkeypatch):
    """The 56-token prompt and 4 new tokens fit 96 positions; 48 new tokens do not. Refused before the video is
    encoded; --allow-long-context runs it."""
    from videorope_trt.runtime.backends.torch.backend import TorchBackend

    assert _run(short_ckpt, clip) == 0
    capsys.readouterr()
    calls = []
    monkeypatch.setattr(TorchBackend, "encode_vision", lambda self, *a: calls.append(a))
    assert _run(short_ckpt, clip, "--max-new-tokens", "48") == 2
    err = capsys.readouterr().err
    assert "the prompt (56 tokens) and max_new_tokens (48) need 104 positions; the model holds 96" in err
    assert "--allow-long-context" in err and calls == []
    assert _run(short_ckpt, clip, "--max-context", "200") == 2
    assert "a KV cache of 200 tokens (--max-context) reaches past them" in capsys.readouterr().err
    monkeypatch.undo()
    assert _run(short_ckpt, clip, "--max-new-tokens", "48", "--allow-long-context") == 0


def test_a_scaling_extends_the_limit():
    assert context_limit(32768, {}) == context_limit(32768, {"delta": 2.0}) == 32768
    assert context_limit(32768, {"scaling": "yarn", "factor": 2.0}) == 65536
    assert context_limit(32768, {"scaling": "videorope++_v1"}) == 4 * 32768  # the scalings' default factor
    assert context_limit(32768, {"scaling": "videoropepp_dynamic", "seq_len": 100000}) == 100000


def test_every_backend_reads_the_limit_of_what_it_runs(tiny_ckpt):
    from videorope_trt.runtime.backends.artifact_model import model_info
    from videorope_trt.runtime.backends.torch.backend import TorchBackend, TorchOptions

    be = TorchBackend.load(tiny_ckpt, TorchOptions(device="cpu", rope_params={"scaling": "yarn", "factor": 2.0}))
    assert be.info.context_limit == 65536 and be.info.max_positions == 32768
    config = json.loads((tiny_ckpt / "config.json").read_text())
    manifest = {"model": {"config": config}, "rope": {"variant": "videorope", "delta": 2.0, "theta": 1e6}}
    assert model_info(manifest).context_limit == 32768
    manifest["rope"].update(scaling="ntk", factor=3.0)
    assert model_info(manifest).context_limit == 3 * 32768


def test_bench_refuses_contexts_past_the_positions_before_running(short_ckpt, tmp_path, capsys):
    """`--contexts 10000000k` ended in a MemoryError traceback. A context is the whole KV cache: the prompt fills it
    less the decoded tokens, so the model's own 96 (or 32k for Qwen2-VL) can be benched."""
    out = tmp_path / "bench.json"
    assert main(["bench", str(short_ckpt), "--contexts", "10000000k", "--device", "cpu", "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert "a context of 10240000000 tokens is beyond the model's position limit (max_position_embeddings): 96 " \
           "tokens; bench contexts up to 96" in err
    assert err.endswith("up to 96\n") and "Traceback" not in err and not out.exists()
    # all contexts are checked before the first is run
    assert main(["bench", str(short_ckpt), "--contexts", "64,200", "--decode-tokens", "2", "--device", "cpu",
                 "--json", str(out)]) == 2
    assert "a context of 200 tokens" in capsys.readouterr().err and not out.exists()
    # the whole cache at the limit: the prompt takes 96 less the 4 decoded tokens
    assert main(["bench", str(short_ckpt), "--contexts", "96", "--decode-tokens", "4", "--frame-size", "56",
                 "--device", "cpu", "--json", str(out), "--plot", str(tmp_path / "b.png")]) == 0
    (result,) = json.loads(out.read_text())["results"]
    assert result["context"] == 96 and 80 < result["prompt_tokens"] <= 92


def test_bench_refuses_contexts_past_this_machines_memory_plan(tiny_ckpt, tmp_path, capsys, monkeypatch):
    from videorope_trt.build.plan import PlanRequest, plan_memory
    from videorope_trt.build.presets import host_preset
    from videorope_trt.commands import run

    # 1 GiB goes to the runtime's libraries and under 0.1 GiB to a 2048-token chunk and 16 frames of 448x448: what
    # is left holds fewer tokens than the model's positions
    memory = int(1.3 * 2**30)
    capacity = plan_memory(tiny_ckpt, host_preset(memory), PlanRequest(precision="fp32", runtime="torch",
                                                                       prefill_chunk=2048)).capacity_context
    assert 64 < capacity < 32768
    monkeypatch.setattr(run, "_host_memory", lambda: memory)
    assert main(["bench", str(tiny_ckpt), "--contexts", str(capacity + 16), "--device", "cpu", "--dtype", "float32",
                 "--json", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err
    assert f"a context of {capacity + 16} tokens is beyond the memory plan for this machine's memory (CPU), 1.3 GiB: " \
           f"{capacity} tokens" in err
