"""`videorope-trt eval OUT`: long-video retrieval (V-NIAH, V-NIAH-D, V-RULER-style tasks) on any backend, with
`--compare OTHER` to run a second artifact (or backend) on the same trials and report their per-trial agreement.

Results go to OUT/eval (OUT/eval-compare with --compare) unless --results says otherwise: results.jsonl (one record
per trial; a rerun resumes), summary.json and one heatmap_<task>.png per task. docs/evaluation.md explains them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from videorope_trt.commands.run import _add_common, backend_options, resolve_backend
from videorope_trt.serve.limits import chunk_sizes


def _numbers(text: str, kind, what: str) -> tuple:
    """"16,32" → (16, 32); a trailing k multiplies by 1024 ("2k" tokens)."""
    out = []
    for part in filter(None, (p.strip().lower() for p in text.split(","))):
        scale = 1024 if part.endswith("k") else 1
        try:
            out.append(kind(float(part.rstrip("k")) * scale) if kind is int else kind(part))
        except ValueError:
            raise ValueError(f"{what}: {part!r} is not a number (received {text!r})") from None
    if not out:
        raise ValueError(f"{what}: received {text!r}, expected comma-separated numbers")
    return tuple(out)


def add_arguments(parser, name: str) -> None:
    from videorope_trt.eval.spec import builtin_names

    _add_common(parser, name)
    parser.add_argument("--tasks", default=",".join(builtin_names()),
                        help=f"comma-separated shipped task names or task files (default: all shipped: "
                             f"{', '.join(builtin_names())})")
    parser.add_argument("--haystack", default="generated",
                        help="a video, a folder of videos (played in name order) or 'generated' (default)")
    parser.add_argument("--lengths", default="16,32", help="haystack lengths, comma-separated (default 16,32)")
    parser.add_argument("--unit", default="frames", choices=("frames", "tokens"),
                        help="unit of --lengths: frames as sampled, or visual tokens (e.g. 2k,4k) (default frames)")
    parser.add_argument("--depths", default="0,0.5,1", help="needle depths, fractions 0..1 (default 0,0.5,1)")
    parser.add_argument("--seeds", default="0", help="one trial per seed and grid cell (default 0)")
    parser.add_argument("--size", default="448x252", help="frame WIDTHxHEIGHT, even sides (default 448x252: 144 "
                        "tokens a temporal slice at Qwen2-VL's patch size, the papers' frame budget)")
    parser.add_argument("--fps", type=float, default=2.0,
                        help="rate of the built videos and the model's sampling rate (default 2)")
    parser.add_argument("--max-new-tokens", type=int, default=8, help="answer length limit (default 8)")
    parser.add_argument("--results", default=None, help="results folder (default OUT/eval, OUT/eval-compare)")
    parser.add_argument("--force", action="store_true",
                        help="start the results file over when it was made with other settings")
    parser.add_argument("--compare", default=None, metavar="OTHER",
                        help="a second artifact run on the same trials (default: OUT again, with --compare-backend)")
    parser.add_argument("--compare-backend", default=None, choices=("torch", "onnxruntime", "tensorrt"),
                        help="the second deployment's backend (default: --backend)")
    parser.add_argument("--compare-target", default=None, help="tensorrt: the second deployment's engines/<target>")
    parser.add_argument("--delete-videos", action="store_true", help="remove each trial's video once answered")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _sides(args) -> list:
    """[(path, backend, namespace of its options)]: OUT on --backend, then the comparison deployment if any. The
    torch-only switches (--dtype, --compile, --split-prefill) configure whichever side runs torch."""
    sides = [(args.out, resolve_backend(args, "eval"), args.target)]
    if args.compare is not None or args.compare_backend is not None or args.compare_target is not None:
        backend = args.compare_backend or args.backend
        target = args.compare_target if args.compare_target is not None else (
            args.target if backend == args.backend else None)
        sides.append((args.compare or args.out, backend, target))
        if (Path(sides[1][0]).resolve(), *sides[1][1:]) == (Path(args.out).resolve(), *sides[0][1:]):
            raise ValueError("--compare: the second deployment is the first one again; give another artifact, "
                             "--compare-backend or --compare-target")
    if all(backend != "torch" for _, backend, _ in sides):
        backend_options(args, "eval")  # refuses the torch-only switches, as `run` does
    out = []
    for path, backend, target in sides:
        side = argparse.Namespace(**{**vars(args), "backend": backend, "target": target})
        if backend != "torch":
            side.dtype, side.compile, side.split_prefill = None, None, False
        out.append((path, backend, side))
    return out


def _deployments(args, sides, sessions, grid, size) -> list:
    from videorope_trt.eval.runner import Deployment
    from videorope_trt.runtime.generate import GenerationConfig

    processor = sessions[0].processor
    per_frame = processor.tokens_per_slice(*processor.target_size(size[1], size[0])) / processor.temporal_patch_size
    # the longest prompt, inserted pictures allowed for: what the memory plan sizes the chunks for
    context = args.max_context or int(max(grid.lengths) * 1.5 * per_frame) + 512
    out = []
    for label, (path, backend, side), session in zip("ab", sides, sessions):
        prefill, vision = chunk_sizes(session, context, side.prefill_chunk, side.vision_chunk)
        config = GenerationConfig(max_new_tokens=args.max_new_tokens, prefill_chunk=prefill, vision_chunk=vision,
                                  max_context=args.max_context)
        description = {"path": str(Path(path).resolve()), "backend": backend,
                       "options": {k: str(v) for k, v in backend_options(side, "eval").items()}}
        out.append(Deployment(label, session, config, description))
    return out


def _grid(args, processor, size):
    from videorope_trt.eval.trials import Grid, frames_for_tokens

    lengths = _numbers(args.lengths, int, "--lengths")
    if args.unit == "tokens":
        lengths = tuple(frames_for_tokens(n, size, processor) for n in lengths)
    return Grid(lengths, _numbers(args.depths, float, "--depths"), _numbers(args.seeds, int, "--seeds"))


def _report(summary: dict, out_dir: Path) -> None:
    labels = summary["labels"]
    for name, entry in summary["tasks"].items():
        parts = [f"{label} {entry['runners'][label]['accuracy']:.3f}" for label in labels]
        if "agreement" in entry:
            parts.append(f"agreement {entry['agreement']['answer']:.3f} (same text {entry['agreement']['text']:.3f})")
        print(f"{name}: {entry['trials']} trials, accuracy {', '.join(parts)}")
    for label, d in summary["header"]["deployments"].items():
        print(f"  {label} = {d['backend']} on {d['path']} ({d['variant']})")
    print(f"[eval] results in {out_dir} (results.jsonl, summary.json, heatmap_*.png)", file=sys.stderr)


def run(args, name: str) -> int:
    from videorope_trt.commands.media import parse_size
    from videorope_trt.eval.runner import EvalSettings, evaluate
    from videorope_trt.eval.spec import load_tasks
    from videorope_trt.runtime.session import Session

    tasks = load_tasks([t.strip() for t in args.tasks.split(",") if t.strip()])
    size = parse_size(args.size)
    EvalSettings(size=size, fps=args.fps)  # refuses a bad frame size or rate before any model is opened
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens: received {args.max_new_tokens}, expected >= 1")
    sides = _sides(args)
    sessions = [Session.open(path, backend, **backend_options(side, "eval")) for path, backend, side in sides]
    grid = _grid(args, sessions[0].processor, size)
    deployments = _deployments(args, sides, sessions, grid, size)
    settings = EvalSettings(grid, size, args.fps, None if args.haystack == "generated" else args.haystack,
                            args.delete_videos)
    out_dir = Path(args.results or Path(args.out) / ("eval-compare" if len(sides) == 2 else "eval"))
    summary = evaluate(tasks, deployments, settings, out_dir, force=args.force, progress=not args.no_progress)
    _report(summary, out_dir)
    return 0
