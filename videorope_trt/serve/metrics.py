"""Prometheus metrics of one server, in a registry of its own (two apps in one process never share counters).

    videorope_queue_depth                     requests admitted and not finished (waiting + running)
    videorope_requests_total{outcome}         finished requests: ok, cancelled, error, rejected
    videorope_time_to_first_token_seconds     request admitted → first answer token (queue wait included)
    videorope_decode_tokens_per_second        per request, after the first token
    videorope_generated_tokens_total
    videorope_vision_milliseconds             vision encoding per request (`GenerationResult.timings["vision_s"]`)
    videorope_video_decode_milliseconds       decoding and preprocessing the frames
    videorope_memory_bytes{kind}              host_rss, and device_allocated / device_peak on CUDA
"""

from __future__ import annotations

import os

_LATENCY = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_MS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)
_RATE = (1, 5, 10, 25, 50, 100, 200, 400, 800, 1600, 3200)


def host_rss_bytes() -> float:
    """The process's resident memory now (Linux /proc; 0 where there is none)."""
    try:
        with open("/proc/self/statm") as f:
            return float(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, IndexError):
        return 0.0


class Metrics:
    def __init__(self, device=None):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.queue_depth = Gauge("videorope_queue_depth", "requests admitted and not finished", registry=r)
        self.requests = Counter("videorope_requests", "finished requests by outcome", ["outcome"], registry=r)
        self.ttft = Histogram("videorope_time_to_first_token_seconds", "admission to first answer token",
                              buckets=_LATENCY, registry=r)
        self.decode_rate = Histogram("videorope_decode_tokens_per_second", "decode speed per request",
                                     buckets=_RATE, registry=r)
        self.tokens = Counter("videorope_generated_tokens", "answer tokens generated", registry=r)
        self.vision_ms = Histogram("videorope_vision_milliseconds", "vision encoding per request", buckets=_MS,
                                   registry=r)
        self.video_ms = Histogram("videorope_video_decode_milliseconds", "frame decoding and preprocessing",
                                  buckets=_MS, registry=r)
        memory = Gauge("videorope_memory_bytes", "memory in use", ["kind"], registry=r)
        memory.labels("host_rss").set_function(host_rss_bytes)
        if device is not None and str(device).startswith("cuda"):
            import torch

            memory.labels("device_allocated").set_function(lambda: float(torch.cuda.memory_allocated(device)))
            memory.labels("device_peak").set_function(lambda: float(torch.cuda.max_memory_allocated(device)))
        for outcome in ("ok", "cancelled", "error", "rejected"):
            self.requests.labels(outcome)  # listed from the start, at 0

    def render(self) -> tuple:
        """(body, content type) of the /metrics response."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
