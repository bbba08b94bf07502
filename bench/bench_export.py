"""Export of a Qwen2-VL-2B-shaped model: wall time per graph and peak memory (RSS), weights as external data.

The model is the published Qwen2-VL-2B config (`bench_runtime.CONFIGS["2b"]`: sizes only) with random weights
built in memory (meta-device init, then a seeded random fill): nothing is downloaded and no 9 GB checkpoint is
written. It goes through the same `export_model` as `videorope-trt export`; the source fingerprint is the config's.

    python -m bench.bench_export --out /tmp/export-2b [--form plugin] [--graphs vision,decoder] [--json r.json]

Each graph goes to its own artifact directory (OUT/vision/, OUT/decoder/) so each is timed alone.

Peak RSS is the process's high-water mark (`resource.getrusage`), children excluded.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import resource
import sys
import time
from pathlib import Path

from videorope_trt.artifact.atomic import write_atomic


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def random_model(cfg: dict, variant: str, params: dict):
    """`VideoRopeQwen2VL` with the config's shapes and seeded random weights, built without a checkpoint."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    from videorope_trt.models.qwen2vl import VideoRopeQwen2VL
    from videorope_trt.models.rope_settings import make_rope_settings

    config = Qwen2VLConfig(**cfg)
    with torch.device("meta"):  # shapes only: no time or memory spent on the default init
        hf = Qwen2VLForConditionalGeneration._from_config(config, dtype=torch.float32, attn_implementation="sdpa")
    hf = hf.to_empty(device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if p.dim() < 2:  # norm scales 1, biases 0
                p.fill_(1.0 if ("norm" in name or "ln_q" in name) and name.endswith("weight") else 0.0)
            else:
                p.normal_(0.0, p.shape[-1] ** -0.5, generator=g)
        for name, b in hf.named_buffers():  # rotary inv_freq buffers are not persistent: recompute them
            if name.endswith("inv_freq"):
                module = hf.get_submodule(name.rsplit(".", 1)[0])
                dim = b.numel() * 2
                theta = getattr(module, "theta", None) or getattr(module, "rope_theta", 10000.0)
                b.copy_(1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    hf.eval()
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    return VideoRopeQwen2VL(hf, make_rope_settings(variant, params, cfg["rope_theta"], head_dim)).eval()


def main(argv=None) -> int:
    from bench.bench_runtime import CONFIGS
    from videorope_trt.export.exporter import ExportConfig, export_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="artifact directory to write")
    ap.add_argument("--model", default="2b", choices=sorted(CONFIGS))
    ap.add_argument("--form", default="plugin", help="rotary form")
    ap.add_argument("--graphs", default="vision,decoder")
    ap.add_argument("--json", default=None, help="also write the result here")
    args = ap.parse_args(argv)

    cfg = CONFIGS[args.model]
    start = time.perf_counter()
    model = random_model(cfg, "videorope", {"delta": 2.0})
    built = time.perf_counter() - start
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e9:.3f} B parameters, built in {built:.1f} s, "
          f"peak RSS {_rss_gib():.2f} GiB", flush=True)
    sha = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()
    times = {}
    for graph in args.graphs.split(","):
        t = time.perf_counter()
        export_model(model, Path(args.out) / graph, ExportConfig(variant="videorope", delta=2.0, rotary_form=args.form,
                                                   graphs=(graph,)),
                     {"checkpoint": f"random Qwen2-VL-{args.model} config", "sha256": sha})
        times[graph] = round(time.perf_counter() - t, 1)
        size = sum(f.stat().st_size for f in (Path(args.out) / graph).glob(f"{graph}.onnx*")) / 2**30
        print(f"{graph}: {times[graph]} s, {size:.2f} GiB on disk, peak RSS so far {_rss_gib():.2f} GiB", flush=True)
    result = {"model": args.model, "form": args.form, "build_model_s": round(built, 1), "export_s": times,
              "peak_rss_gib": round(_rss_gib(), 2), "machine": f"{platform.machine()} {platform.node()}",
              "command": " ".join(["python", "bench/bench_export.py", *(argv or sys.argv[1:])])}
    print(json.dumps(result))
    if args.json:
        write_atomic(args.json, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
