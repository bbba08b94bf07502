"""The bench scripts' shared pieces (`bench/profiling.py`) and the scripts' CPU modes on the tiny model: they run
end to end and write what docs/benchmarks.md quotes from them (their GPU runs are recorded in
docs/benchmark-log.md)."""

import json
from pathlib import Path

import pytest


@pytest.fixture
def bench():
    """The bench scripts' shared module (`bench` is a package: `python -m bench.<script>`)."""
    from bench import profiling

    return profiling


def test_write_json_goes_through_a_temporary_name(bench, tmp_path):
    path = tmp_path / "run" / "r.json"
    bench.write_json(path, {"a": 1.5})
    assert json.loads(path.read_text()) == {"a": 1.5} and list(path.parent.iterdir()) == [path]
    with pytest.raises(TypeError):  # not JSON: the earlier file stays whole, and nothing else is left
        bench.write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1.5} and list(path.parent.iterdir()) == [path]
    bench.write_json(path, {"a": object()}, default=lambda o: "obj")
    assert json.loads(path.read_text()) == {"a": "obj"}


def test_write_json_cut_short_before_the_rename_leaves_the_old_file(bench, tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    bench.write_json(path, {"a": 1})

    def cut(self, target):
        raise OSError("cut short")

    monkeypatch.setattr(Path, "replace", cut)
    with pytest.raises(OSError, match="cut short"):
        bench.write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1}  # the new numbers went to the temporary name only


def test_chosen_names_what_is_unknown(bench):
    known = {"fused": 1, "layer_by_layer": 2}
    assert bench.chosen("layer_by_layer,fused", known, "--settings") == ["layer_by_layer", "fused"]
    with pytest.raises(SystemExit,
                       match=r"--settings: unknown \['fast'\]; expected some of \['fused', 'layer_by_layer'\]"):
        bench.chosen("fused,fast", known, "--settings")


def test_run_meta_names_the_command_and_the_cpu(bench):
    meta = bench.run_meta("bench_x.py", ["--model", "tiny"], "cpu")
    assert meta["command"] == "python -m bench.bench_x --model tiny" and meta["device"] == "cpu"


def test_runtime_bench_on_the_cpu(bench, tmp_path):
    from bench import bench_runtime

    args = ["--model", "tiny", "--device", "cpu", "--dtype", "float32", "--contexts", "300", "--decode-tokens", "4",
            "--out", str(tmp_path)]
    assert bench_runtime.main(args) == 0
    run = json.loads((tmp_path / "bench_runtime.json").read_text())
    assert run["command"] == "python -m bench.bench_runtime " + " ".join(args) and run["device"] == "cpu"
    r = run["results"][0]
    assert r["context"] == r["tokens"] == 300 and r["frames"] >= 1
    hf = [v for k, v in r.items() if k.startswith("transformers_")]
    # transformers' decode rate is the difference of two timed runs: on a loaded machine it can be lost in the noise,
    # which the bench records as null rather than a made-up rate
    rates = [v["decode_tok_s"] for v in hf if v["decode_tok_s"] is not None]
    assert r["ours"]["decode_tokens"] > 0 and hf and all(rate > 0 for rate in rates)
    if rates:
        assert r["decode_vs_best_hf"] == pytest.approx(r["ours"]["decode_tok_s"] / max(rates))
    assert r["ttft_vs_best_hf"] == pytest.approx(r["ours"]["ttft_s"] / min(v["ttft_s"] for v in hf))
    assert r["roofline_tok_s"] is None  # no copy bandwidth off a GPU: NaN, written as null


def test_vision_bench_on_the_cpu(bench, tmp_path):
    from bench import bench_vision_attention

    args = ["--model", "tiny", "--device", "cpu", "--dtype", "float32", "--contexts", "512", "--frame-side", "56",
            "--repeats", "1", "--out", str(tmp_path)]
    assert bench_vision_attention.main(args) == 0
    r = json.loads((tmp_path / "bench_vision_attention.json").read_text())["results"][0]
    t, h, w = r["grid_thw"]
    assert t == (512 - 40) // (h * w // 4) and r["frames"] == 2 * t  # whole slices fill all but 40 text tokens
    for form in ("tower",):  # fp32 on the CPU: the same numbers as the stock tower
        assert r[f"rel_err_{form}_vs_stock"] < 1e-5 and r[form]["s"] > 0


def test_vision_memory_bench_on_the_cpu(bench, tmp_path):
    from bench import bench_runtime_memory

    args = ["vision", "--model", "tiny", "--device", "cpu", "--dtype", "float32", "--minutes", "0.1", "--frame-side",
            "56", "--out", str(tmp_path)]
    assert bench_runtime_memory.main(args) == 0
    run = json.loads((tmp_path / "memory_vision_tiny.json").read_text())
    assert run["command"] == "python -m bench.bench_runtime_memory " + " ".join(args)
    row = run["rows"][0]
    assert row["frames"] == 6 and row["tokens"] == row["patches"] // 4  # 0.1 min at 1 fps; 2x2 patches merged


def test_decode_bytes_by_hand():
    """The engine graph's bytes per decode token, counted by hand for Qwen2-VL-2B at 32k in fp16."""
    from bench import bench_decode_bytes as b
    from videorope_trt.artifact.model_config import read_model_config

    m = read_model_config("qwen2-vl-2b")
    row = 2 * 28 * 2 * 128  # K and V of 28 layers, 2 KV heads of 128
    weights = 2 * (28 * (2 * 1536 * 1536 + 2 * 1536 * 256 + 3 * 1536 * 8960) + 28 * (1536 + 2 * 256 + 2 * 1536) + 1536
                   + 151936 * 1536)
    assert b.in_place_bytes(m, 32768) == {"weights": weights, "cache_read": 33024 * row * 2, "cache_written": row * 2,
                                          "logits": 151936 * 4}
    assert b.concat_bytes(m, 32768)["cache_read"] == (2 * 32768 + 1) * row * 4
    assert b.main(["--models", "2b", "--context", "32k"]) == 0
