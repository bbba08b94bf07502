"""The one place that imports TensorRT: full TensorRT (10.x / 11.x, module `tensorrt`) or TensorRT-RTX (module
`tensorrt_rtx`, or `tensorrt_rtx_bindings` where only the split PyPI wheels are installed). Imports are lazy, so the
package works on machines with neither; a missing one raises an error naming the package to install.

Flavour differences are data (`FLAVOURS`), so the builder has one code path.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Flavour:
    name: str
    modules: tuple  # import names, tried in order
    install: str  # what to tell a user who lacks it
    timing_cache: bool  # TensorRT-RTX: a timing cache forces a GPU query and blocks CPU-only builds
    aot_compute_capabilities: bool  # TensorRT-RTX targets compute capabilities explicitly


FLAVOURS = {
    "tensorrt": Flavour("tensorrt", ("tensorrt",),
                        "TensorRT 10.x/11.x (module `tensorrt`): on Jetson the JetPack apt package python3-libnvinfer; "
                        "elsewhere `pip install tensorrt-cu13` from NVIDIA's index (pypi.nvidia.com)",
                        timing_cache=True, aot_compute_capabilities=False),
    "rtx": Flavour("rtx", ("tensorrt_rtx", "tensorrt_rtx_bindings"),
                   "TensorRT-RTX (module `tensorrt_rtx`): pip install -r requirements/rtx.txt "
                   "(tensorrt-rtx-cu13-libs and tensorrt-rtx-cu13-bindings)",
                   timing_cache=False, aot_compute_capabilities=True),
}


class TensorRTMissing(ImportError):
    """The TensorRT flavour a step needs is not installed."""


def get_flavour(name: str) -> Flavour:
    try:
        return FLAVOURS[name]
    except KeyError:
        raise ValueError(f"unknown TensorRT flavour {name!r}; expected one of {sorted(FLAVOURS)}") from None


def import_trt(flavour: str):
    """The TensorRT module of this flavour, or TensorRTMissing naming what to install."""
    fl = get_flavour(flavour)
    errors = []
    for name in fl.modules:
        try:
            return importlib.import_module(name)
        except ImportError as e:  # try the next name, report all
            errors.append(f"{name}: {e}")
    raise TensorRTMissing(f"{fl.name} is not installed ({'; '.join(errors)}). Install {fl.install}")


def available(flavour: str) -> bool:
    try:
        import_trt(flavour)
    except TensorRTMissing:
        return False
    return True


def version(trt) -> str:
    return str(trt.__version__)


def version_matches(running: str, accepted) -> bool:
    """True when `running` (e.g. "10.3.0.30") starts with one of the accepted prefixes ("10.3", "11")."""
    parts = running.split(".")
    for prefix in accepted:
        want = prefix.rstrip(".").split(".")
        if parts[: len(want)] == want:
            return True
    return False


#: TensorRT warnings that say nothing to a user of this project (shown with --verbose):
QUIET = (
    # the decomposed rotary form is an ONNX local function; the parser inlines it once per call and each copy keeps
    # the body's node names, which only name intermediate tensors for debugging (one warning per node per call)
    "already exists, the output tensors of this new instance will not be queryable",
    # the vision graph's position ids and the decoder's mask are int64, and the runtime binds them as int64
    "has Int64 binding",
)


def make_logger(trt, verbose: bool = False):
    """TensorRT's log on stderr: warnings and errors (everything with `verbose`), without the `QUIET` ones."""
    if verbose:
        return trt.Logger(trt.Logger.VERBOSE)
    return _quiet_logger(trt)


def _quiet_logger(trt):
    import sys

    class QuietLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)

        def log(self, severity, msg):
            if int(severity) <= int(trt.ILogger.WARNING) and not any(q in msg for q in QUIET):
                print(f"[TRT] [{str(severity).rpartition('.')[2][0]}] {msg}", file=sys.stderr)

    return QuietLogger()


def strongly_typed_flags(trt) -> int:
    """Network creation flags: STRONGLY_TYPED where the enum still has it (10.x; deprecated no-op in 11 and RTX)."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def enable_aliased_plugin_io(trt, config) -> None:
    """Turn on aliased plugin I/O (`PreviewFeature.ALIASED_PLUGIN_IO_10_03`) in a builder config.

    A network with `VideoRopeCache` nodes needs it: their cache outputs alias their cache inputs (the plugin's
    getAliasedInput), which is what makes the cache update in place, and TensorRT-RTX 1.7.1 refuses to build such a
    plugin with the feature off. The enum's value differs between TensorRT 10.x (1) and 11.x (0), so it is taken by
    name (docs/plugin.md, "Aliased cache outputs")."""
    feature = getattr(getattr(trt, "PreviewFeature", None), "ALIASED_PLUGIN_IO_10_03", None)
    if feature is None:
        raise RuntimeError(f"TensorRT {version(trt)} has no PreviewFeature.ALIASED_PLUGIN_IO_10_03 (it first "
                           "appears in 10.3): VideoRopeCache's cache outputs cannot alias its inputs here; use "
                           "TensorRT >= 10.3 (or TensorRT-RTX) or the decomposed cache form")
    config.set_preview_feature(feature, True)


def compute_capability_enum(trt, cc: str):
    """TensorRT-RTX's ComputeCapability member for "8.9" (SM89), or a ValueError listing the ones it knows."""
    name = "SM" + cc.replace(".", "")
    member = getattr(trt.ComputeCapability, name, None)
    if member is None:
        known = [m for m in dir(trt.ComputeCapability) if m.startswith("SM")]
        raise ValueError(f"TensorRT-RTX {version(trt)} cannot target compute capability {cc}; it knows {known}")
    return member


def ensure_rtx_parser_library(trt) -> None:
    """TensorRT-RTX's ONNX parser dlopens `libtensorrt_rtx.so` by its bare name when it creates a plugin, but the
    wheel ships only `libtensorrt_rtx.so.1`; without the unversioned name the process aborts. The parser library's
    RPATH is $ORIGIN, so a symlink beside it is found even when created after process start."""
    libs = _rtx_library_dir(trt)
    if libs is None:
        return  # a system install, with its own development symlinks
    link, target = libs / "libtensorrt_rtx.so", libs / "libtensorrt_rtx.so.1"
    if link.exists() or not target.exists():
        return
    try:
        link.symlink_to(target.name)
    except FileExistsError:
        pass  # created by a concurrent process
    except OSError as e:
        raise RuntimeError(
            f"TensorRT-RTX's ONNX parser needs {link} (a symlink to {target.name}) to load plugins, and it could "
            f"not be created ({e}); create it, or put a directory holding it on LD_LIBRARY_PATH before starting"
        ) from e


def _rtx_library_dir(trt) -> Path | None:
    try:
        libs = importlib.import_module("tensorrt_rtx_libs")
    except ImportError:
        libs = None
    for base in ([Path(libs.__file__).parent] if libs else []) + [Path(trt.__file__).parent]:
        if (base / "libtensorrt_rtx.so.1").exists():
            return base
    return None


def load_plugin_library(trt, path, creator: tuple = ("VideoRope", "1", "videorope")) -> None:
    """Register the creators of a plugin library (IPluginV3 `getCreators`) with TensorRT's plugin registry.

    Idempotent: `load_library` refuses a library whose creators are already registered, so look first."""
    path = Path(path).resolve()  # load_library treats a name without "/" as a bare soname
    if not path.is_file():
        raise FileNotFoundError(f"plugin library {path} does not exist; build it with "
                                "`videorope-trt build-plugin` (see docs/deployment.md)")
    registry = trt.get_plugin_registry()
    if registry.get_creator(*creator) is not None:
        return
    if registry.load_library(str(path)) is None:
        raise RuntimeError(f"TensorRT {version(trt)} could not load the plugin library {path}")


def current_gpu() -> dict | None:
    """The GPU this process would run engines on: {"name", "compute_capability"}, or None without a CUDA GPU.

    Read through torch (already a dependency) so that no CUDA binding is needed just to ask."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return None
    import torch  # heavy; only asked when checking an engine against this machine

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return {"name": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}"}
