"""GPU kernels of the PyTorch backend (Triton): one-row products, split decode attention, rotation with the
cache write, and chunked-prefill attention merged by log-sum-exp."""
