"""Qwen2-VL with a pluggable RoPE variant, built on transformers by composition; local checkpoint loading;
the tiny-checkpoint factory used by the demo and the tests.

Names are imported on first use, so `import videorope_trt.models` stays light (no torch, no transformers).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "load_model": "videorope_trt.models.loading",
    "load_tokenizer": "videorope_trt.models.loading",
    "save_model": "videorope_trt.models.loading",
    "read_config": "videorope_trt.models.loading",
    "VideoRopeQwen2VL": "videorope_trt.models.qwen2vl",
    "RopeSettings": "videorope_trt.models.rope_settings",
    "make_rope_settings": "videorope_trt.models.rope_settings",
    "make_tiny": "videorope_trt.models.tiny",
    "TinySpec": "videorope_trt.models.tiny",
    "greedy_generate": "videorope_trt.models.greedy",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'videorope_trt.models' has no attribute {name!r}")
