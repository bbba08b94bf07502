"""numpy references of the `VideoRope` and `VideoRopeCache` ops (the oracles of the kernels, the plugins and the
ONNX forms)."""

from videorope_trt.rope.apply import (
    video_rope_cache_numpy as VideoRopeCache,  # noqa: N812  the op's one name
    video_rope_numpy as VideoRope,  # noqa: N812  the op's one name
)

__all__ = ["VideoRope", "VideoRopeCache"]
