"""Bytes one decode token moves through the engine's decoder graph, counted from the graph's inputs and outputs
(no GPU, no timing): weights read once, the KV cache read by attention and written for the new token, and the
logits. Two forms of the graph at an fp16 export:

    concat    the decoder before the in-place cache: past K/V in (fp32 in an fp16 export) read whole into the present
              K/V out (past + 1 rows, written whole), which attention then reads; (B, S, vocab) logits
    in-place  caller-owned fp16 caches written one row per layer by VideoRopeCache; attention reads the rows up to the
              new token rounded up to a block (trt_engine.DECODE_ROWS); (B, 1, vocab) logits

    python -m bench.bench_decode_bytes --models 2b,7b --context 32k --out bench-out
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from videorope_trt.artifact.atomic import write_atomic
from videorope_trt.artifact.model_config import read_model_config
from videorope_trt.runtime.backends.trt_engine import decode_rows
from videorope_trt.runtime.benchmark import parse_contexts


def weight_bytes(m, act: int = 2) -> int:
    """fp16 decoder weights, and the engine's own lm_head (a separate initializer even when tied)."""
    return (m.llm_gemm_params() + m.llm_other_params() + m.embed_params()) * act


def concat_bytes(m, past: int) -> dict:
    per_row = 2 * m.num_layers * m.kv_dim * 4  # K and V of every layer, fp32 I/O
    # the concatenation reads the past and writes the present, and attention reads the present
    return {"weights": weight_bytes(m), "cache_read": (2 * past + 1) * per_row, "cache_written": (past + 1) * per_row,
            "logits": m.vocab_size * 4}


def in_place_bytes(m, past: int) -> dict:
    per_row = 2 * m.num_layers * m.kv_dim * 2  # fp16 caches
    return {"weights": weight_bytes(m), "cache_read": decode_rows(past, past + 1 + 256) * per_row,
            "cache_written": per_row, "logits": m.vocab_size * 4}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="2b,7b")
    ap.add_argument("--context", default="32k", help="cache rows before the token")
    ap.add_argument("--out", default=None, help="folder for bench_decode_bytes.json")
    args = ap.parse_args(argv)
    past = parse_contexts(args.context)[0]
    rows = []
    for name in args.models.split(","):
        m = read_model_config(f"qwen2-vl-{name}")
        for form, count in (("concat", concat_bytes), ("in-place", in_place_bytes)):
            b = count(m, past)
            rows.append({"model": m.name, "form": form, "context": past, **b, "total": sum(b.values())})
    print("| model | graph | weights GB | cache read GB | cache written GB | logits MB | total GB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['form']} | {r['weights'] / 1e9:.3f} | {r['cache_read'] / 1e9:.3f} | "
              f"{r['cache_written'] / 1e9:.4f} | {r['logits'] / 1e6:.2f} | {r['total'] / 1e9:.3f} |")
    if args.out:
        command = "python -m bench.bench_decode_bytes " + " ".join(argv or sys.argv[1:])
        write_atomic(Path(args.out) / "bench_decode_bytes.json",
                     json.dumps({"command": command, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
