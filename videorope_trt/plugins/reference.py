"""numpy reference of the `VideoRope` op (the oracle of the kernel, the plugin and the ONNX forms)."""

from videorope_trt.rope.apply import video_rope_numpy as VideoRope  # noqa: N812  the op's one name

__all__ = ["VideoRope"]
