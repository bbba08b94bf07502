"""videorope-trt: Video-LLMs with 3D rotary position embeddings, from Qwen2-VL checkpoints to TensorRT.

Importing the package (and every subpackage) needs no GPU and no TensorRT; heavy libraries are imported lazily
where they are used.
"""

__version__ = "0.1.0"
