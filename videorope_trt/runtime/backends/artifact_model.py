"""What the ONNX Runtime and TensorRT backends read from an artifact directory: the model record, the embedding
table and the graph files, all from the directory itself (it is self-contained: no checkpoint is read)."""

from __future__ import annotations

from pathlib import Path

from videorope_trt.runtime.backends.base import ModelInfo


def model_info(manifest: dict) -> ModelInfo:
    """ModelInfo of the exported model: its config record and the variant and position parameters it was exported
    with."""
    from videorope_trt.models.rope_settings import POSITION_PARAMS

    rope = manifest.get("rope") or {}
    params = {k: v for k, v in rope.items() if k in POSITION_PARAMS}
    return ModelInfo.from_config(manifest["model"]["config"], variant=rope["variant"], position_params=params,
                                 rope_params=rope)


def embedding_table(artifact, manifest: dict, device):
    """The artifact's token embedding table (vocab, hidden) as a torch tensor on `device`, in its stored type."""
    import torch

    from videorope_trt.artifact.embeddings import read_table

    return torch.from_numpy(read_table(Path(artifact) / manifest["files"]["embeddings"])).to(device)


def graph_path(artifact, manifest: dict, graph: str) -> Path:
    """The ONNX file of a graph the manifest registers, checked to be there with its external data file."""
    from videorope_trt.artifact.manifest import graph_file

    return graph_file(artifact, manifest, graph)
