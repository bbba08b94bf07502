"""`videorope-trt demo`: the whole job on the built-in tiny checkpoint and a generated video.

Each step is the command a user would type, printed before it runs:
make-tiny → make-video → positions → export → build (TensorRT-RTX, when present) → run → validate.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

#: Where the TensorRT C++ headers may be, to compile the VideoRope plugin for the build step ($TENSORRT_INCLUDE first).
HEADER_DIRS = ("/usr/include/x86_64-linux-gnu", "/usr/include/aarch64-linux-gnu", "/usr/local/tensorrt/include",
               str(Path(__file__).resolve().parents[2] / "shared/third_party/tensorrt-11.1.0/include"))
PROMPT = "What moves in the video?"


def add_arguments(parser, name: str) -> None:
    parser.add_argument("--out", default="demo-out", help="working directory (default demo-out)")
    parser.add_argument("--variant", default="videorope", help="RoPE variant (default videorope)")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of the generated video")
    parser.add_argument("--skip-build", action="store_true", help="skip the TensorRT-RTX engine build")


def _trt_headers() -> Path | None:
    for d in filter(None, (os.environ.get("TENSORRT_INCLUDE"), *HEADER_DIRS)):
        if (Path(d) / "NvInferRuntime.h").is_file():
            return Path(d)
    return None


def _build_blocker(skip: bool) -> str | None:
    """Why the engine build step cannot run here, or None."""
    from videorope_trt import trt
    from videorope_trt.plugins.build import BuildError, find_nvcc

    if skip:
        return "--skip-build given"
    if not trt.available("rtx"):
        return "TensorRT-RTX is not installed (pip install -r requirements/rtx.txt)"
    try:
        find_nvcc()
    except BuildError as e:
        return f"the plugin library needs the CUDA compiler: {e}"
    if _trt_headers() is None:
        return ("the plugin library needs TensorRT's C++ headers: set TENSORRT_INCLUDE to the folder with "
                "NvInferRuntime.h")
    return None


def _video_layout(ckpt: Path, clip: Path) -> str:
    """The positions layout of the demo prompt: text, the video on the LLM grid, text (as `run` builds it)."""
    from videorope_trt.media.video import ProcessorConfig, load_video

    proc = ProcessorConfig.from_checkpoint(ckpt)
    t, h, w = (int(v) for v in load_video(clip, processor=proc).grid_thw)
    m = proc.merge_size
    return f"text:15,video:{t}x{h // m}x{w // m},text:12"


def _steps(args, out: Path) -> list:
    ckpt, clip, art = out / "checkpoint", out / "clip.mp4", out / "artifacts"
    steps = [
        ["make-tiny", str(ckpt), "--variant", args.variant, "--force"],
        ["make-video", str(clip), "--seconds", str(args.seconds), "--fps", "8", "--size", "160x120"],
        ["positions", "--variant", args.variant, "--layout", lambda: _video_layout(ckpt, clip)],
        ["export", str(ckpt), str(art), "--variant", args.variant, "--rotary-form", "plugin"],
    ]
    blocker = _build_blocker(args.skip_build)
    if blocker is None:
        steps.append(["build-plugin", "--out", str(art / "plugins"), "--trt-include", str(_trt_headers()),
                      "--archs", "89", "--no-ptx"])
        plugin = art / "plugins" / "libvideorope_trt_plugins.so"
        steps.append(["build", str(art), "--target", "rtx", "--plugin", str(plugin)])
    else:
        steps.append(f"build skipped: {blocker}")
    for backend in ("torch", "onnxruntime"):
        steps.append(["run", str(art), "--backend", backend, "--video", str(clip),
                      "--prompt", PROMPT, "--max-new-tokens", "16", "--no-progress"])
    steps.append(["validate", str(art), "--backends", "torch,onnxruntime,tensorrt"])
    return steps


def run(args, name: str) -> int:
    from videorope_trt.commands import main as cli

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    t0, results = time.perf_counter(), []
    for step in _steps(args, out):
        if isinstance(step, str):
            print(f"\n# {step}", flush=True)
            results.append((step.split(":")[0], "skipped"))
            continue
        step = [a() if callable(a) else a for a in step]  # arguments known only once earlier steps ran
        print("\n$ videorope-trt " + " ".join(step), flush=True)
        t = time.perf_counter()
        rc = cli(step)
        label = " ".join(step[:1] + (step[2:4] if step[0] == "run" else []))  # "run --backend torch"
        results.append((label, f"{time.perf_counter() - t:.1f} s"))
        if rc != 0:
            print(f"demo: step `{step[0]}` failed (exit {rc})", file=sys.stderr)
            return rc
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s; artifacts in {out}/ "
          "(the tiny checkpoint has random weights: its answer is noise, the same from every backend)")
    for what, how in results:
        print(f"  {what:<40} {how}")
    return 0
