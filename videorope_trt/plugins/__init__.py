"""The rotary ops `VideoRope` and `VideoRopeCache` everywhere they run: numpy reference, torch op, ONNX node,
ONNX Runtime op, CUDA kernel and TensorRT plugin. One name per op, one contract (`videorope_trt/rope/contract.py`)."""

from videorope_trt.rope.contract import VIDEO_ROPE, VIDEO_ROPE_CACHE, RotaryAttrs

__all__ = ["VIDEO_ROPE", "VIDEO_ROPE_CACHE", "RotaryAttrs"]
