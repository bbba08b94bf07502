"""The artifact contract every stage shares: manifest.json, graph I/O specs, the model-config record, the
precision registry, engine.json (with the memory plan), host-side vision inputs and embedding-table I/O.

Standard library and numpy only: a deployed runtime reads an artifact without torch, ONNX or TensorRT.
"""
