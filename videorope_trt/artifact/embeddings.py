"""The token embedding table an artifact carries (`embeddings.safetensors`): the runtime looks tokens up in it,
since the exported decoder takes embeddings, not token ids. Stored in the graphs' float type, so what the runtime
feeds is exactly what the graph was exported to take. safetensors + numpy only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FILE = "embeddings.safetensors"
KEY = "embed_tokens.weight"


def write_table(path, table: np.ndarray) -> Path:
    """Write a (vocab, hidden) table through a temporary name."""
    from safetensors.numpy import save

    from videorope_trt.artifact.atomic import write_atomic

    table = np.ascontiguousarray(table)
    if table.ndim != 2 or table.dtype not in (np.float16, np.float32):
        raise ValueError(f"embedding table: expected a (vocab, hidden) float16/float32 array, got {table.dtype} "
                         f"{table.shape}")
    return write_atomic(path, save({KEY: table}))


def read_table(path) -> np.ndarray:
    """The (vocab, hidden) table of an artifact's embeddings file."""
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; the artifact holds its embedding table there (export again)")
    tensors = load_file(str(path))
    if KEY not in tensors:
        raise ValueError(f"{path}: no tensor {KEY!r}, it has {sorted(tensors)}; expected a file written by export")
    return tensors[KEY]
