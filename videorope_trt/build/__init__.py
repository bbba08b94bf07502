"""From an artifact to engines: build targets (presets), the memory plan, and the TensorRT engine build."""
