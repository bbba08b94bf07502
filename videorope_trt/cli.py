"""`videorope-trt <command>`: a thin shell over the library.

Commands live in a table (name → module, help); a command's module is imported only when it runs, so `--help`
works on any machine. Each command module exposes `add_arguments(parser, name)` and `run(args, name) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "demo": ("videorope_trt.demo", "tiny checkpoint + generated video: export, build, run, parity report"),
    "make-tiny": ("videorope_trt.models.commands", "write a deterministic tiny Qwen2-VL checkpoint (HF layout)"),
    "make-video": ("videorope_trt.runtime.video_commands", "write a synthetic MP4 (moving shapes, frame counter)"),
    "positions": ("videorope_trt.rope.commands", "print the 3D positions of a layout for a RoPE variant"),
    "export": ("videorope_trt.export.commands", "checkpoint → vision.onnx + decoder.onnx + manifest.json"),
    "validate": ("videorope_trt.export.commands", "parity of every backend against PyTorch (Polygraphy)"),
    "plan": ("videorope_trt.runtime.plan_commands", "memory plan: largest context and frame count for a target"),
    "build-plugin": ("videorope_trt.plugins.build", "compile the VideoRope CUDA kernel + TensorRT plugin library"),
    "build": ("videorope_trt.runtime.plan_commands", "ONNX → TensorRT engines for a target preset"),
    "calibrate": ("videorope_trt.calibration.commands", "INT8/FP8 post-training quantization on real videos"),
    "run": ("videorope_trt.runtime.commands", "answer a prompt about a video, streamed"),
    "bench": ("videorope_trt.runtime.commands", "time to first token, prefill and decode speed, memory"),
}


class UserError(Exception):
    """A problem with the user's input: printed without a traceback, exit status 2."""


def _parser(argv) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="videorope-trt", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:  # import only the module of the command that runs
            importlib.import_module(module).add_arguments(p, name)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args, args.command) or 0)
    except (UserError, ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"videorope-trt {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
