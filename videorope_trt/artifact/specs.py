"""Inputs and outputs of the exported graphs, as data: names, dtypes, symbolic dims.

One table serves the exporter (dynamic shapes, output names), the manifest, the engine builder (optimization
profiles: every symbolic dim gets a min/opt/max) and the runtime (buffer allocation, feed checks). stdlib only.

Types: the embeddings (vision output, decoder input) and the KV cache are in the graph's float type (half the bytes
of fp32 in an fp16 export); pixel values, positions (exact fractional values) and logits are always float32.

Symbolic dims:
    num_patches   vision patches in one call: whole temporal slices of one grid (a multiple of slice_len)
    slice_len     patches in one temporal slice of that grid (h × w, a multiple of merge²): the call's slices are
                  attended as one batch, so they must all be this long (one grid per call)
    num_merged    num_patches / merge²
    batch         sequences in the batch
    seq           new tokens in this call (prefill: a chunk of the prompt; decode: 1)
    total         cache rows the attention reads: at least write_offset + seq (more for a decode step whose length
                  is rounded up: the mask blocks the rows past the new token)
    capacity      rows of each KV cache (the runtime allocates them once)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name
    dims: tuple  # int for fixed sizes, str for symbolic ones

    def to_json(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.dims)}


@dataclass(frozen=True)
class GraphSpec:
    name: str
    inputs: tuple
    outputs: tuple

    @property
    def input_names(self) -> list:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list:
        return [t.name for t in self.outputs]

    def tensor(self, name: str) -> TensorSpec:
        for t in self.inputs + self.outputs:
            if t.name == name:
                return t
        raise KeyError(f"{self.name}: no tensor named {name!r}; it has {self.input_names + self.output_names}")

    def to_json(self) -> dict:
        return {"inputs": [t.to_json() for t in self.inputs], "outputs": [t.to_json() for t in self.outputs]}


def cache_names(layer: int) -> tuple:
    """The decoder's K and V cache inputs of one layer."""
    return f"key_cache_{layer}", f"value_cache_{layer}"


def cache_out_names(layer: int) -> tuple:
    """Its updated caches: the same memory in TensorRT (aliased plugin outputs), new tensors in ONNX Runtime."""
    return f"key_cache_{layer}_out", f"value_cache_{layer}_out"


def cache_aliases(num_layers: int) -> dict:
    """cache output → the cache input it updates, for every layer."""
    return {o: i for layer in range(num_layers) for o, i in zip(cache_out_names(layer), cache_names(layer))}


def vision_spec(model, float_dtype: str = "float32") -> GraphSpec:
    """`model`: an `artifact.model_config.ModelConfig`."""
    return GraphSpec(
        "vision",
        inputs=(
            TensorSpec("pixel_values", "float32", ("num_patches", model.patch_dim)),  # the processor's own type
            TensorSpec("slice_pos_ids", "int64", ("slice_len", 2)),  # (row, column) of each patch of one slice
        ),
        outputs=(TensorSpec("image_embeds", float_dtype, ("num_merged", model.hidden_size)),),
    )


def decoder_spec(model, num_axes: int, float_dtype: str = "float32", last_only: bool = True) -> GraphSpec:
    """`model`: an `artifact.model_config.ModelConfig`; `num_axes`: rows of `positions` (the RoPE variant's)."""
    cache = ("batch", model.num_kv_heads, "capacity", model.head_dim)
    inputs = [
        TensorSpec("inputs_embeds", float_dtype, ("batch", "seq", model.hidden_size)),
        TensorSpec("positions", "float32", (num_axes, "batch", "seq")),  # always fp32: exact fractional positions
        TensorSpec("attention_mask", "int64", ("batch", "total")),
        TensorSpec("write_offset", "int32", ("batch",)),  # the cache row of each sequence's first new token
    ]
    # logits leave in fp32 whatever the graph's type: sampling reads them so
    outputs = [TensorSpec("logits", "float32", ("batch", 1 if last_only else "seq", model.vocab_size))]
    for i in range(model.num_layers):
        inputs += [TensorSpec(n, float_dtype, cache) for n in cache_names(i)]
        outputs += [TensorSpec(n, float_dtype, cache) for n in cache_out_names(i)]
    return GraphSpec("decoder", tuple(inputs), tuple(outputs))


def graph_specs(model, num_axes: int, float_dtype: str = "float32") -> dict:
    return {"vision": vision_spec(model, float_dtype), "decoder": decoder_spec(model, num_axes, float_dtype)}
