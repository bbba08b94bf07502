"""`videorope-trt calibrate CKPT OUT --precision int8-sq|int8-wo|fp8 --videos DIR --prompts FILE`.

Writes OUT/decoder.<precision>.onnx (+ .data; OUT/vision.<precision>.onnx with --quantize-vision) and
OUT/calibration/report.json, registers the graphs in OUT/manifest.json as "decoder.<precision>" (a new OUT first
gets the float vision graph and a manifest), and prints the report's table. Then:
`videorope-trt build OUT --target T --graphs vision decoder.<precision>`.
"""

from __future__ import annotations

import sys
import time


def add_arguments(parser, name: str) -> None:
    from videorope_trt.artifact.precisions import names
    from videorope_trt.plugins.cache_forms import CACHE_FORMS

    parser.add_argument("checkpoint", metavar="CKPT", help="Qwen2-VL checkpoint directory (HF layout)")
    parser.add_argument("out", metavar="OUT", help="artifact directory to write the Q/DQ ONNX and the report into")
    parser.add_argument("--precision", required=True, help=f"one of {', '.join(names('calibrate'))}")
    parser.add_argument("--videos", required=True, help="directory of calibration videos (the last ones are held out)")
    parser.add_argument("--prompts", required=True, help="text file, one prompt per line")
    parser.add_argument("--target", default=None,
                        help="build preset the result is for: checks its precisions (no FP8 on Orin) and, for a new "
                             "directory, writes graphs its TensorRT parses")
    parser.add_argument("--holdout", type=int, default=1, help="videos held out for the report (default 1)")
    parser.add_argument("--prompts-per-video", type=int, default=1, help="calibration samples per video (default 1)")
    parser.add_argument("--fps", type=float, default=2.0, help="frames sampled per second (default 2, as `run`)")
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--token-budget", type=int, default=None, help="most video tokens per sample")
    parser.add_argument("--greedy-tokens", type=int, default=8, help="greedy tokens compared per held-out sample")
    parser.add_argument("--quantize-vision", action="store_true", help="quantize the vision tower too (default float)")
    parser.add_argument("--float", dest="float_type", choices=("fp16", "fp32"), default="fp16",
                        help="type of what the Q/DQ pairs leave unquantized (default fp16: strongly typed engines run "
                             "an fp32 graph's unquantized ops in fp32)")
    parser.add_argument("--alpha", type=float, default=None,
                        help="SmoothQuant migration strength in [0, 1] for int8-sq (default 0.5)")
    parser.add_argument("--rotary-form", default="plugin", choices=sorted(CACHE_FORMS),
                        help="form of the decoder's rotary cache op (default plugin)")
    parser.add_argument("--variant", default=None, help="RoPE variant (default: the checkpoint's)")
    parser.add_argument("--no-onnx-check", action="store_true", help="skip running the Q/DQ decoder in ONNX Runtime")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _bar(enabled: bool):
    if not enabled:
        from videorope_trt.calibration.pipeline import _no_bar

        return _no_bar
    from tqdm import tqdm

    return lambda items, **kw: tqdm(items, file=sys.stderr, leave=False, **kw)


def run(args, name: str) -> int:
    from videorope_trt.calibration.data import VideoSettings
    from videorope_trt.calibration.pipeline import CalibrationConfig, calibrate_checkpoint
    from videorope_trt.calibration.quantize import ModelOptMissing, require_modelopt
    from videorope_trt.calibration.report import table
    from videorope_trt.commands import UserError

    try:
        require_modelopt()  # before any video is decoded or any graph written
    except ModelOptMissing as e:
        raise UserError(str(e)) from None
    generation = None
    if args.target is not None:  # the target's precisions, before any work (no FP8 on Orin), and its parsers
        from videorope_trt.build.optables import generation_for
        from videorope_trt.build.presets import get_preset

        get_preset(args.target).check_precision(args.precision)
        generation = generation_for(target=args.target)[0]
    start = time.perf_counter()
    cfg = CalibrationConfig(
        precision=args.precision, videos=args.videos, prompts=args.prompts,
        video=VideoSettings(args.fps, args.max_frames, args.token_budget), holdout=args.holdout,
        prompts_per_video=args.prompts_per_video, greedy_tokens=args.greedy_tokens,
        quantize_vision=args.quantize_vision, rotary_form=args.rotary_form, onnx_check=not args.no_onnx_check,
        variant=args.variant, float_type=args.float_type, alpha=args.alpha, generation=generation,
    )
    report = calibrate_checkpoint(args.checkpoint, args.out, cfg, bar=_bar(not args.no_progress))
    print(table(report))
    names = " ".join(report["graphs"])
    print(f"[calibrate] graph(s) {names} and calibration/report.json written to {args.out} in "
          f"{time.perf_counter() - start:.1f} s; build with: videorope-trt build {args.out} --target <preset> "
          f"--graphs {'' if 'vision.' in names else 'vision '}{names}", file=sys.stderr)
    return 0
