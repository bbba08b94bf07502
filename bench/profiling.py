"""What the bench scripts share: the device's copy bandwidth, and one reading of a torch.profiler run (device time
per kernel)."""

from __future__ import annotations

import time

import torch


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
