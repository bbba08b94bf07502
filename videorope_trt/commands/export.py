"""CLI: `videorope-trt export CKPT OUT` and `videorope-trt validate OUT` (thin shells over the library)."""

from __future__ import annotations

import time


def _export_arguments(p):
    from videorope_trt.artifact.precisions import names
    from videorope_trt.build.presets import PRESETS
    from videorope_trt.export.generations import DEFAULT_GENERATION
    from videorope_trt.plugins.cache_forms import CACHE_FORMS

    p.add_argument("checkpoint", help="Qwen2-VL checkpoint directory (Hugging Face layout, safetensors)")
    p.add_argument("out", help="artifact directory to write (new, or an earlier export of the same checkpoint, "
                               "which is replaced whole: its engines, parity and calibration results go with it)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--target", default=None, choices=sorted(PRESETS),
                        help="the build target the graphs are for: they are written for the oldest TensorRT it names "
                             f"(default: {DEFAULT_GENERATION} graphs, which every TensorRT the presets name parses)")
    target.add_argument("--trt", default=None, metavar="VERSION",
                        help="a bare TensorRT version the graphs must parse on, e.g. 10.3, 10.16, 11.1 or rtx-1.7")
    p.add_argument("--variant", default=None, help="RoPE variant (default: the checkpoint's, else m_rope)")
    p.add_argument("--delta", type=float, default=None, help="VideoRoPE temporal spacing δ (default: the checkpoint's)")
    p.add_argument("--rotary-form", default="plugin", choices=sorted(CACHE_FORMS),
                   help="how the decoder's rotate-and-write-the-cache op appears in ONNX (default plugin: the "
                        "VideoRopeCache node, which engines need: its outputs alias the cache; decomposed: standard "
                        "ops only, for ONNX Runtime)")
    p.add_argument("--precision", default="fp32", choices=names("export"),
                   help="graph precision (default fp32; int8/fp8 come from `videorope-trt calibrate`)")
    p.add_argument("--all-logits", action="store_true",
                   help="decoder logits for every position, (B, S, vocab); the default is the last position only")


def _validate_arguments(p):
    from videorope_trt.export.parity import PARITY_RUNNERS

    p.add_argument("out", help="artifact directory written by `videorope-trt export`")
    p.add_argument("--checkpoint", default=None, help="checkpoint to compare against (default: the manifest's source)")
    p.add_argument("--backends", default="torch,onnxruntime,tensorrt",
                   help=f"comma-separated, from {sorted(PARITY_RUNNERS)} (tensorrt joins only when importable)")
    p.add_argument("--layout", default="text:12,video,text:8",
                   help="prompt layout, comma-separated parts: text:N (N random text tokens), video (the generated "
                        "clip), image (its first frame)")
    p.add_argument("--video-seconds", type=float, default=8.0, help="length of the generated clip")
    p.add_argument("--frame-size", default="112x84", help="WIDTHxHEIGHT of the generated clip")
    p.add_argument("--sample-fps", type=float, default=2.0, help="frames sampled per second of video")
    p.add_argument("--no-localize", action="store_true",
                   help="on failure, skip naming the first diverging node (it re-exports an fp32 reference)")
    p.add_argument("--batch", type=int, default=2, help="sequences per batch (left padded to the longest)")
    p.add_argument("--decode-steps", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)


def add_arguments(parser, name):
    {"export": _export_arguments, "validate": _validate_arguments}[name](parser)


def _run_export(args) -> int:
    from videorope_trt.build.optables import generation_for
    from videorope_trt.export.exporter import ExportConfig, export_checkpoint

    generation, parser = generation_for(target=args.target, version=args.trt)
    cfg = ExportConfig(variant=args.variant, delta=args.delta, rotary_form=args.rotary_form, precision=args.precision,
                       logits="all" if args.all_logits else "last", generation=generation)
    start = time.perf_counter()
    print(f"export: {args.checkpoint} → {args.out} ({cfg.rotary_form}, {cfg.precision}, {generation} graphs for "
          f"{parser})", flush=True)
    manifest = export_checkpoint(args.checkpoint, args.out, cfg)
    print(f"export: variant {manifest['rope']['variant']}, {manifest['model']['num_layers']} layers, "
          f"done in {time.perf_counter() - start:.1f} s")
    return 0


def _run_validate(args) -> int:
    from videorope_trt.export.parity import ParityRequest, validate

    width, _, height = args.frame_size.partition("x")
    if not (width.isdigit() and height.isdigit()):
        raise ValueError(f"--frame-size {args.frame_size!r}: expected WIDTHxHEIGHT, e.g. 112x84")
    req = ParityRequest(out_dir=args.out, checkpoint=args.checkpoint, backends=tuple(args.backends.split(",")),
                        layout=args.layout, video_seconds=args.video_seconds, frame_size=(int(width), int(height)),
                        sample_fps=args.sample_fps, batch=args.batch, decode_steps=args.decode_steps, seed=args.seed,
                        localize=not args.no_localize)
    report = validate(req)
    return 0 if report["passed"] else 1


def run(args, name) -> int:
    return {"export": _run_export, "validate": _run_validate}[name](args)
