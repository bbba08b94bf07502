"""The bench scripts' one reading of a torch.profiler run: device time per kernel."""

from __future__ import annotations


def device_ms(event) -> float:
    """An event's summed device time in ms (the attribute is `device_time_total` in newer torch, `cuda_time_total`
    in older)."""
    return (getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)) / 1000


def _self_device_ms(event) -> float:
    return (getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0)) / 1000


def kernels(prof, skip: tuple = ()) -> list:
    """The profiled kernels with device time, heaviest first, leaving out names that start with one of `skip`.
    Kernels only: a host op profiled with them (CPU activity) has device time of its kernels, none of its own."""
    rows = [e for e in prof.key_averages() if _self_device_ms(e) > 0 and not e.key.startswith(skip)]
    return sorted(rows, key=device_ms, reverse=True)
