"""bench/bench_cache_kernel.py: its CPU dry run (what runs where the kernel cannot) writes the JSON it promises, and
its byte count is the contract's traffic. The GPU run itself is recorded in docs/benchmarks.md."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def bench():
    from bench import bench_cache_kernel

    return bench_cache_kernel


def test_dry_run_writes_its_json(bench, tmp_path):
    out = tmp_path / "r.json"
    assert bench.main(["--dry", "--out", str(out), "--dtypes", "float32,float16"]) == 0
    run = json.loads(out.read_text())
    assert run["mode"] == "dry" and run["reason"] == "--dry given" and run["device"] == "cpu"
    assert run["command"] == f"python -m bench.bench_cache_kernel --dry --out {out} --dtypes float32,float16"
    assert [(r["dtype"], r["seq"]) for r in run["rows"]] == [("float32", 1), ("float32", 32), ("float16", 1),
                                                              ("float16", 32)]
    errors = {r["dtype"]: r["rel_err_vs_fp64"] for r in run["rows"]}
    assert errors["float32"] < 1e-6 and errors["float16"] < 2e-3  # the torch op, checked like the kernel would be


def test_out_may_name_a_folder_as_the_other_benches_take_it(bench, tmp_path, capsys):
    assert bench.main(["--dry", "--out", str(tmp_path), "--dtypes", "float32"]) == 0
    path = tmp_path / "bench_cache_kernel.json"
    assert json.loads(path.read_text())["mode"] == "dry" and f"wrote {path}" in capsys.readouterr().out


def test_without_a_gpu_the_reason_is_given(bench):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the bench times the kernel")
    assert bench.kernel_or_reason(None) == (None, "no CUDA GPU")


def test_bytes_are_q_twice_k_and_v_twice_and_positions(bench):
    import torch

    step = bench.make_step("cpu", torch.float16, 12, 2, 4096, capacity=8192)
    assert step["write_offset"].item() == 4096  # the chunk ends at the cache's end
    q, kv = 4096 * 12 * 128 * 2, 4096 * 2 * 128 * 2
    assert bench.bytes_moved(step) == 2 * q + 4 * kv + 3 * 4096 * 4
