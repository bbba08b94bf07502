"""Test driver of the VideoRope TensorRT plugin: calls the built library as TensorRT would, without libnvinfer."""
