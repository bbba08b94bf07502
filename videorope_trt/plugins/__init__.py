"""The rotary op `VideoRope` everywhere it runs: numpy reference, torch op, ONNX node, ONNX Runtime op,
CUDA kernel and TensorRT plugin. One name, one contract (`contract.py`)."""

from videorope_trt.plugins.contract import VIDEO_ROPE, RotaryAttrs

__all__ = ["VIDEO_ROPE", "RotaryAttrs"]
