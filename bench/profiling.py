"""What the bench scripts share: the device's copy bandwidth, one reading of a torch.profiler run (device time
per kernel), and how a run's results are written (`run_meta`, `write_json`)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from videorope_trt.artifact.atomic import write_atomic


def run_meta(script: str, argv=None, device="cuda") -> dict:
    """Date, device, torch and the command line of a bench run (`argv` as `main` got it; None: sys.argv)."""
    args = sys.argv[1:] if argv is None else argv
    on_gpu = str(device).startswith("cuda") and torch.cuda.is_available()
    return {"date": time.strftime("%Y-%m-%d"), "device": torch.cuda.get_device_name() if on_gpu else "cpu",
            "torch": torch.__version__, "command": " ".join(["python", "-m", f"bench.{Path(script).stem}", *args])}


def chosen(names: str, known, flag: str) -> list:
    """A comma-separated list of `known`'s keys (a registry of settings) from the command line, checked."""
    picked = names.split(",")
    unknown = [n for n in picked if n not in known]
    if unknown:
        raise SystemExit(f"{flag}: unknown {unknown}; expected some of {sorted(known)}")
    return picked


def result_path(out, script: str) -> Path:
    """Where a script given `--out OUT` writes its JSON: OUT itself when it names a .json file, else OUT/<script>.json
    (OUT a folder, as the other scripts take it)."""
    out = Path(out)
    return out if out.suffix == ".json" and not out.is_dir() else out / f"{script}.json"


def write_json(path: Path, data: dict, default=None) -> None:
    """`data` as JSON at `path` (its folder made), through a temporary name: a cut-short run leaves no half file."""
    write_atomic(path, json.dumps(data, indent=2, default=default) + "\n")


def copy_bandwidth(device="cuda") -> float:
    """Device-to-device copy bandwidth, bytes read + written per second (nan off CUDA)."""
    if torch.device(device).type != "cuda":
        return float("nan")
    a = torch.empty(1 << 30, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    b.copy_(a)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        b.copy_(a)
    torch.cuda.synchronize()
    return 2 * a.numel() * 10 / (time.perf_counter() - start)


def device_ms(event) -> float:
    """An event's summed device time in ms (the attribute is `device_time_total` in newer torch, `cuda_time_total`
    in older)."""
    return (getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)) / 1000


def _on_device(event) -> bool:
    """A kernel, copy or memset: host events (ops, CUDA runtime calls) carry the device time of what they launched
    when the profiler records CPU activity too."""
    from torch.autograd import DeviceType

    return getattr(event, "device_type", DeviceType.CUDA) != DeviceType.CPU


def kernels(prof, skip: tuple = ()) -> list:
    """The profiled kernels with device time, heaviest first, leaving out names that start with one of `skip`."""
    rows = [e for e in prof.key_averages() if _on_device(e) and device_ms(e) > 0 and not e.key.startswith(skip)]
    return sorted(rows, key=device_ms, reverse=True)
