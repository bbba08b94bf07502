"""The command-line layer: the command table and its dispatcher, and one module per command group, each with
`add_arguments(parser, name)` and `run(args, name) -> int`, thin shells over the library. A command's module is
imported only when it runs, so `--help` works on any machine. Nothing below this layer imports it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

DESCRIPTION = "Video-LLMs with 3D rotary position embeddings, from Qwen2-VL checkpoints to TensorRT."


#: the exit status of a command stopped by Ctrl-C (128 + SIGINT, as shells report it)
INTERRUPTED = 130


class UserError(Exception):
    """A problem with the user's input: printed without a traceback, exit status 2."""


COMMANDS = {
    "demo": ("demo", "tiny checkpoint + generated video: export, build, run, parity report"),
    "make-tiny": ("models", "write a deterministic tiny Qwen2-VL checkpoint (HF layout)"),
    "make-video": ("media", "write a synthetic MP4 (moving shapes, frame counter)"),
    "positions": ("rope", "print the 3D positions of a layout for a RoPE variant"),
    "plot-rope": ("rope", "plot each RoPE variant's rotary angles along t, h, w and its logit decay over time"),
    "export": ("export", "checkpoint → vision.onnx + decoder.onnx + manifest.json"),
    "validate": ("export", "parity of every backend against PyTorch (Polygraphy)"),
    "calibrate": ("calibrate", "INT8/FP8 post-training quantization on real videos"),
    "plan": ("build", "memory plan: largest context and frame count for a target"),
    "build-plugin": ("plugins", "compile the VideoRope CUDA kernel + TensorRT plugin library"),
    "build": ("build", "ONNX → TensorRT engines for a target preset"),
    "run": ("run", "answer a prompt about a video, streamed"),
    "bench": ("run", "time to first token, prefill and decode speed, memory"),
    "eval": ("eval", "long-video retrieval (V-NIAH, V-NIAH-D, V-RULER), heatmaps, agreement of two deployments"),
    "serve": ("serve", "OpenAI-compatible HTTP endpoint (chat completions with video), optionally on Ray Serve"),
    "batch": ("serve", "answer every (video, prompt) pair as JSON lines, resumable, optionally as a Ray Data job"),
}


def _module(name: str):
    return importlib.import_module(f"videorope_trt.commands.{name}")


def _parser(argv) -> argparse.ArgumentParser:
    from videorope_trt import __version__

    parser = argparse.ArgumentParser(prog="videorope-trt", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"videorope-trt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:  # import only the module of the command that runs
            _module(module).add_arguments(p, name)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = _module(COMMANDS[args.command][0])
    try:
        return int(module.run(args, args.command) or 0)
    except (UserError, ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"videorope-trt {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # every writer goes through a temporary name (artifact.atomic), so nothing half-written is left to report
        print(f"videorope-trt {args.command}: interrupted", file=sys.stderr)
        return INTERRUPTED
