"""`videorope-trt plan CKPT --target T` and `videorope-trt build OUT --target T`: thin shells over
`build.plan.plan_memory` and `build.engine.build_engines`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from videorope_trt.artifact.precisions import PRECISIONS
from videorope_trt.build.plan import RUNTIMES  # light: the standard library and the presets
from videorope_trt.build.presets import PRESETS
from videorope_trt.commands import UserError


def _frame_size(text: str) -> tuple:
    """WIDTHxHEIGHT (as make-video, export and video tools write sizes) → the plan's (height, width)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:  # ArgumentTypeError: argparse prints this message (a ValueError's it replaces)
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels such as 448x448, got {text!r}") from None
    return (h, w)


def _plan_arguments(p) -> None:
    p.add_argument("--target", required=True, choices=sorted(PRESETS), help="target preset")
    p.add_argument("--precision", choices=sorted(PRECISIONS), default=None,
                   help="weights/activations precision (default: fp16; build: the manifest's)")
    p.add_argument("--vision-precision", choices=sorted(PRECISIONS), default=None,
                   help="vision tower precision (default: fp16 for quantized modes)")
    p.add_argument("--max-context", type=int, default=None,
                   help="context budget in tokens (default: preset's, within what fits)")
    p.add_argument("--max-frames", type=int, default=None,
                   help="video frames to hold (default: preset's, within what fits)")
    p.add_argument("--prefill-chunk", type=int, default=None, help="tokens per prefill step")
    p.add_argument("--frames-per-chunk", type=int, default=None, help="frames per vision-encoder call (even)")
    p.add_argument("--frame-size", type=_frame_size, default=(448, 448), help="WIDTHxHEIGHT pixels per frame (448x448)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--headroom", type=float, default=None, help="fraction of usable memory kept free (preset's)")
    p.add_argument("--unfused-attention", action="store_true", help="count (heads, S, T) attention scores")


def add_arguments(parser, name: str) -> None:
    if name == "plan":
        parser.add_argument("ckpt",
                            help="checkpoint directory, config.json, or a known model: qwen2-vl-2b, qwen2-vl-7b")
        parser.add_argument("--json", action="store_true", help="print the plan as JSON")
        parser.add_argument("--runtime", choices=sorted(RUNTIMES), default="tensorrt",
                            help="what runs the model: its lm_head copy and logits are counted as it holds them "
                                 "(default tensorrt; `build` always plans for tensorrt)")
    else:
        parser.add_argument("out", help="artifact directory written by `videorope-trt export`")
        parser.add_argument("--graphs", nargs="+", default=["vision", "decoder"], help="graphs to build")
        parser.add_argument("--plugin", default=None, help="VideoRope plugin library (default: OUT/plugins/...)")
        parser.add_argument("--compute-capabilities", nargs="+", default=None,
                            help="TensorRT-RTX targets such as 8.9 12.0 (default: the preset's)")
        parser.add_argument("--verbose", action="store_true", help="TensorRT's verbose log")
    _plan_arguments(parser)


def _request(args, precision: str, all_logits: bool = False):
    from videorope_trt.build.plan import PlanRequest

    return PlanRequest(precision=precision, all_logits=all_logits, vision_precision=args.vision_precision,
                       max_context=args.max_context, max_frames=args.max_frames, prefill_chunk=args.prefill_chunk,
                       frames_per_chunk=args.frames_per_chunk, frame_size=args.frame_size, batch=args.batch,
                       headroom=args.headroom, fused_attention=not args.unfused_attention,
                       runtime=getattr(args, "runtime", "tensorrt"))  # engines are TensorRT's


def _warn(plan) -> None:
    from videorope_trt.build.plan import plan_warnings

    for line in plan_warnings(plan):
        print(f"warning: {line}", file=sys.stderr)


def _run_plan(args) -> int:
    from videorope_trt.build.plan import plan_memory

    plan = plan_memory(args.ckpt, args.target, _request(args, args.precision or "fp16"))
    print(json.dumps(plan.to_dict(), indent=2) if args.json else plan.table())
    _warn(plan)
    return 0


def _run_build(args) -> int:
    from videorope_trt.artifact.engine_info import MemoryPlan
    from videorope_trt.build import engine as B
    from videorope_trt.trt import TensorRTMissing

    manifest = B.read_manifest(Path(args.out))
    graphs = manifest.get("graphs") or {}
    # the ONNX decides precision (strong typing): per graph if recorded, else the export's
    decoder = next((g for g in args.graphs if B.graph_role(g) == "decoder"), "decoder")
    precision = args.precision or (graphs.get(decoder) or {}).get("precision") or manifest.get("precision", "fp16")
    ccs = tuple(args.compute_capabilities) if args.compute_capabilities else None
    request = B.BuildRequest(args.target, _request(args, precision, manifest.get("logits") == "all"),
                             graphs=tuple(args.graphs), plugin_library=args.plugin, verbose=args.verbose,
                             compute_capabilities=ccs)
    start = time.perf_counter()
    print(f"build: {args.out} for {args.target} ({precision})", flush=True)
    try:
        info = B.build_engines(args.out, request)
    except TensorRTMissing as e:
        raise UserError(str(e)) from e
    for graph, e in info["engines"].items():
        print(f"  {graph}: {e['file']} {e['bytes'] / 2**20:.1f} MiB in {e['build_seconds']:.1f} s, "
              f"profiles {', '.join(p['name'] for p in e['profiles'])}")
    plan = info["plan"]
    print(f"  {info['flavour']} {info['tensorrt_version']}, compute capability "
          f"{' '.join(info['compute_capabilities'])}; context {plan['max_context']} tokens, "
          f"{plan['max_frames']} frames; done in {time.perf_counter() - start:.1f} s")
    _warn(MemoryPlan.from_dict(plan))
    return 0


def run(args, name: str) -> int:
    return _run_plan(args) if name == "plan" else _run_build(args)
