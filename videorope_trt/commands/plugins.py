"""`videorope-trt build-plugin --out DIR --trt-include DIR`: compile the VideoRope plugin library with nvcc."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from videorope_trt.plugins.build import DEFAULT_ARCHS, KERNEL_LIB, PTX_ARCH


def add_arguments(ap, name: str = "build-plugin") -> None:
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    ap.add_argument("--trt-include", type=Path, default=os.environ.get("TENSORRT_INCLUDE"),
                    help="folder with NvInferRuntime.h (default: $TENSORRT_INCLUDE)")
    ap.add_argument("--archs", default=",".join(DEFAULT_ARCHS), help="compute capabilities, e.g. 87,90,110")
    ap.add_argument("--no-ptx", action="store_true", help=f"omit the compute_{PTX_ARCH} PTX")
    ap.add_argument("--kernel-only", action="store_true", help=f"build {KERNEL_LIB} (no TensorRT headers needed)")


def run(args, name: str = "build-plugin") -> int:
    from videorope_trt.plugins.build import BuildConfig, BuildError, build

    cfg = BuildConfig(args.out, args.trt_include, tuple(a.strip() for a in args.archs.split(",") if a.strip()),
                      not args.no_ptx, args.kernel_only)
    try:
        print(build(cfg))
    except BuildError as e:
        print(f"videorope-trt build-plugin: error: {e}", file=sys.stderr)
        return 2
    return 0
