"""Backends behind one small interface (`base.Backend`): PyTorch, ONNX Runtime, TensorRT."""

from videorope_trt.runtime.backends.base import BACKENDS, Backend, ModelInfo, backend_class, open_backend

__all__ = ["BACKENDS", "Backend", "ModelInfo", "backend_class", "open_backend"]
