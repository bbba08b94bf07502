"""The PyTorch backend: the backend itself (`backend.py`), its static-cache decoder (`static_decoder.py`) and the
decode step as one CUDA graph (`decode_graph.py`); its Triton kernels are in `runtime.kernels`."""
