"""Compile the VideoRope plugin library (CUDA kernels + TensorRT IPluginV3s) with nvcc, without CMake.

    videorope-trt build-plugin --out build/plugins --trt-include /usr/include/x86_64-linux-gnu

Two libraries can come out of `csrc/`:
- `libvideorope_trt_plugins.so`: kernels + plugins (`VideoRope` and `VideoRopeCache`), exports
  `getCreators`/`setLoggerFinder` (TensorRT loads it) and `videorope_launch`/`videorope_cache_launch` (the GPU runtime
  calls them). Needs the TensorRT headers of the TensorRT that will load it.
- `libvideorope_kernel.so` (`kernel_only=True`): the kernels and their launch functions alone, no TensorRT headers.

Both link the CUDA runtime statically and never link libnvinfer, so one file loads in TensorRT, TensorRT-RTX and a
plain process. Each library is written to a temporary name and renamed when the link succeeded.
The CMake project beside this file (`plugins/CMakeLists.txt`) builds the same library on a user's machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from videorope_trt.artifact.atomic import atomic_file

CSRC = Path(__file__).resolve().parent / "csrc"
PLUGIN_LIB = "libvideorope_trt_plugins.so"
KERNEL_LIB = "libvideorope_kernel.so"
#: One object each; the first of each tuple is the VideoRope op's, the second VideoRopeCache's.
KERNEL_SOURCES = ("videorope_kernel.cu", "videorope_cache_kernel.cu")
PLUGIN_SOURCES = ("videorope_plugin.cpp", "videorope_cache_plugin.cpp")

#: Orin (87), Hopper (90), Thor (110 with CUDA 13), the RTX architectures TensorRT-RTX targets (75, 80, 86, 89, 120),
#: datacenter Blackwell (100); PTX of the newest lets the driver compile for later GPUs.
DEFAULT_ARCHS = ("75", "80", "86", "87", "89", "90", "100", "110", "120")
PTX_ARCH = "120"


class BuildError(RuntimeError):
    """The plugin library could not be built; the message says what was missing or what failed."""


@dataclass(frozen=True)
class BuildConfig:
    out_dir: Path
    trt_include: Path | None = None  # folder holding NvInferRuntime.h; None with kernel_only
    archs: tuple = DEFAULT_ARCHS
    ptx: bool = True
    kernel_only: bool = False
    nvcc: str | None = None  # default: $CUDACXX, then nvcc on PATH, then /usr/local/cuda/bin/nvcc
    debug: bool = False

    def __post_init__(self):
        bad = [a for a in self.archs if not str(a).isdigit()]
        if bad or not self.archs:
            raise ValueError(f"archs must be compute capabilities like '90' or '87', got {self.archs!r}")


def find_nvcc(explicit: str | None = None) -> str:
    """`explicit` if given (it must exist), else $CUDACXX, nvcc on PATH, /usr/local/cuda/bin/nvcc."""
    if explicit is not None and not (Path(explicit).is_file() and os.access(explicit, os.X_OK)):
        raise BuildError(f"nvcc not found at {explicit}: pass the path of the CUDA compiler")
    for cand in (explicit, os.environ.get("CUDACXX"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return str(cand)
    raise BuildError("nvcc not found: install the CUDA toolkit, put nvcc on PATH or set CUDACXX (looked for "
                     f"{explicit or '$CUDACXX'}, PATH, /usr/local/cuda/bin/nvcc)")


def check_trt_include(path) -> Path:
    if path is None:
        raise BuildError("TensorRT headers are needed for the plugin: pass trt_include (the folder holding "
                         "NvInferRuntime.h, e.g. /usr/include/x86_64-linux-gnu or <TensorRT>/include)")
    path = Path(path)
    if not (path / "NvInferRuntime.h").is_file():
        raise BuildError(f"TensorRT headers not found: {path} has no NvInferRuntime.h; expected the include folder "
                         "of a TensorRT 10.x/11.x installation")
    return path


def gencode_flags(archs, ptx: bool) -> list:
    flags = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    if ptx:
        flags.append(f"-gencode=arch=compute_{PTX_ARCH},code=compute_{PTX_ARCH}")
    return flags


def _run(cmd: list, what: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-4000:]}")
    return proc.stderr


def compile_kernel(nvcc: str, out: Path, archs, ptx: bool, debug: bool = False, resource_usage: bool = False,
                   source: str = KERNEL_SOURCES[0]) -> str:
    """Compile one kernel source of `csrc/` into an object; returns the compiler's stderr (the resource report with
    `resource_usage`)."""
    cmd = [nvcc, "-std=c++17", "-O3", "-Xcompiler", "-fPIC,-fvisibility=hidden", *gencode_flags(archs, ptx), "-c",
           str(CSRC / source), "-o", str(out)]
    if resource_usage:
        cmd.insert(1, "-Xptxas=-v")
    if debug:
        cmd.insert(1, "-lineinfo")
    return _run(cmd, f"compiling {source}")


def compile_plugin_object(nvcc: str, trt_include: Path, out: Path, source: str = PLUGIN_SOURCES[0]) -> None:
    """Compile one IPluginV3 source (host code only) against one set of TensorRT headers."""
    cmd = [nvcc, "-std=c++17", "-O2", "-Xcompiler", "-fPIC,-fvisibility=hidden,-Wall,-Wextra",
           "-isystem", str(trt_include), "-c", str(CSRC / source), "-o", str(out)]
    _run(cmd, f"compiling {source} against {trt_include}")


def compile_kernels(nvcc: str, out_dir: Path, archs, ptx: bool, debug: bool = False) -> list:
    """Every kernel source compiled into `out_dir`; returns the objects."""
    objects = [Path(out_dir) / (Path(src).stem + ".o") for src in KERNEL_SOURCES]
    for src, obj in zip(KERNEL_SOURCES, objects):
        compile_kernel(nvcc, obj, archs, ptx, debug, source=src)
    return objects


def compile_plugin_objects(nvcc: str, trt_include: Path, out_dir: Path) -> list:
    """Every plugin source compiled against one set of TensorRT headers into `out_dir`; returns the objects."""
    objects = [Path(out_dir) / (Path(src).stem + ".o") for src in PLUGIN_SOURCES]
    for src, obj in zip(PLUGIN_SOURCES, objects):
        compile_plugin_object(nvcc, trt_include, obj, source=src)
    return objects


def link(nvcc: str, objects: list, out: Path) -> None:
    _run([nvcc, "-shared", "-cudart", "static", *map(str, objects), "-o", str(out)], "linking the plugin library")


def build(cfg: BuildConfig) -> Path:
    """Build the library described by `cfg` into `cfg.out_dir`; returns its path."""
    nvcc = find_nvcc(cfg.nvcc)
    trt_include = None if cfg.kernel_only else check_trt_include(cfg.trt_include)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / (KERNEL_LIB if cfg.kernel_only else PLUGIN_LIB)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".build-") as tmp, atomic_file(target) as partial:
        objects = compile_kernels(nvcc, Path(tmp), cfg.archs, cfg.ptx, cfg.debug)
        if trt_include is not None:
            objects += compile_plugin_objects(nvcc, trt_include, Path(tmp))
        link(nvcc, objects, partial)
    return target
