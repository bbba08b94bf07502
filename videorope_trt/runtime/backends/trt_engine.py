"""The TensorRT backend's pieces: one engine with its execution context (tensors bound by name, a binding kept until
it changes), the KV cache it owns, and the decode step replayed as CUDA graphs.

Only the name-based tensor API is used (`num_io_tensors`, `get_tensor_name`, `set_input_shape`,
`set_tensor_address`, `execute_async_v3`), which TensorRT 10.x (Jetson's 10.3 included) and 11.x both have.
"""

from __future__ import annotations

from pathlib import Path

#: TensorRT DataType member name → torch dtype name.
TRT_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT64": "int64", "INT32": "int32",
              "INT8": "int8", "BOOL": "bool", "FP8": "float8_e4m3fn"}
#: decode steps attend a multiple of this many cache rows (the mask blocks the rows past the new token), so the
#: decode graph's shapes change, and a CUDA graph is captured, once per this many tokens rather than every token
DECODE_ROWS = 256


def torch_dtype(trt_dtype):
    import torch

    name = getattr(trt_dtype, "name", str(trt_dtype).rpartition(".")[2])
    if name not in TRT_DTYPES:
        raise ValueError(f"tensorrt backend: no torch dtype for TensorRT {name}; known {sorted(TRT_DTYPES)}")
    return getattr(torch, TRT_DTYPES[name])


class TrtEngine:
    """One deserialized engine and its execution context. Shapes and addresses are set only when they change:
    a cache bound once stays bound, and a replayed CUDA graph sees the same bindings it was captured with."""

    def __init__(self, trt, runtime, path: Path):
        self.runtime = runtime  # TensorRT's runtime must outlive the engines it deserialized
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"tensorrt backend: could not deserialize {path}; rebuild it on this machine")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.inputs = [n for n in names if is_input[n]]
        self.outputs = [n for n in names if not is_input[n]]
        self.dtypes = {n: torch_dtype(self.engine.get_tensor_dtype(n)) for n in names}
        self.profile = 0
        self.bound = {}  # name → (shape, address) as last set

    def use_profile(self, index: int, stream) -> None:
        """Switch optimization profile (0 prefill, 1 decode: build/engine.py); its inputs are bound anew."""
        if index != self.profile and index < self.engine.num_optimization_profiles:
            self.context.set_optimization_profile_async(index, stream)
            self.profile, self.bound = index, {}

    def bind(self, tensors: dict) -> None:
        """name → contiguous torch tensor (inputs and outputs); sets what changed since the last call."""
        for name, t in tensors.items():
            key = (tuple(t.shape), t.data_ptr())
            if self.bound.get(name) == key:
                continue
            if name in self.inputs:
                self.context.set_input_shape(name, key[0])
            self.context.set_tensor_address(name, key[1])
            self.bound[name] = key

    def execute(self, stream) -> None:
        if not self.context.execute_async_v3(stream):
            raise RuntimeError("tensorrt backend: execute_async_v3 failed (see the TensorRT log above)")

    def output_shape(self, name) -> tuple:
        return tuple(self.context.get_tensor_shape(name))


class KVCache:
    """One (B, KV, capacity, D) buffer per cache input of the decoder engine, in its dtype, allocated once and bound
    as the engine's input: the engine's VideoRopeCache plugin writes each call's rows into it in place."""

    def __init__(self, names, batch: int, kv_heads: int, capacity: int, head_dim: int, dtype, device):
        import torch

        self.buffers = {n: torch.zeros((batch, kv_heads, capacity, head_dim), dtype=dtype, device=device)
                        for n in names}

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.buffers.values())


def decode_rows(cache_position: int, capacity: int) -> int:
    """Cache rows a decode step at `cache_position` attends: the next multiple of DECODE_ROWS, within capacity."""
    return min(capacity, -(-(cache_position + 1) // DECODE_ROWS) * DECODE_ROWS)


class DecodeGraphs:
    """The decode step (embedding lookup, positions, write offset, the engine, the cache position advanced) on
    static buffers, replayed as one CUDA graph per attended length (`decode_rows`): per token the host copies the
    next token ids (device to device) and replays. Captured lazily, after one eager run of the same step."""

    def __init__(self, backend, mask, offset, step: float, length: int):
        import torch

        d, e = backend.device, backend.decoder
        self.backend = backend
        self.full_mask = mask.to(torch.int64).contiguous()  # (B, capacity)
        self.offset, self.step = offset.to(torch.float32).contiguous(), float(step)
        b = mask.shape[0]
        self.tokens = torch.zeros(b, dtype=torch.int64, device=d)
        self.cache_position = torch.full((1,), length, dtype=torch.int64, device=d)
        self.embeds = torch.zeros((b, 1, backend.info.hidden_size), dtype=e.dtypes["inputs_embeds"], device=d)
        self.positions = torch.zeros_like(self.offset)
        self.write_offset = torch.zeros(b, dtype=torch.int32, device=d)
        self.logits = torch.zeros((b, 1, backend.info.vocab_size), dtype=torch.float32, device=d)
        self.masks, self.graphs = {}, {}

    def _mask(self, rows: int):
        if rows not in self.masks:
            self.masks[rows] = self.full_mask[:, :rows].contiguous()
        return self.masks[rows]

    def _step(self, rows: int):
        """The step's work on the static buffers (what a graph captures)."""
        be = self.backend
        self.embeds.copy_(be.embeddings[self.tokens][:, None])
        self.positions.copy_(self.offset + self.step * self.cache_position.float())
        self.write_offset.copy_(self.cache_position.to(self.write_offset.dtype).expand_as(self.write_offset))
        be.run_decoder(self.embeds, self.positions, self._mask(rows), self.write_offset, self.logits)
        self.cache_position.add_(1)

    def __call__(self, tokens, length: int):
        """tokens (B,) → logits (B, vocab) f32 of the step at cache position `length` (valid until the next call)."""
        import torch

        be = self.backend
        rows = decode_rows(length, be.capacity)
        self.tokens.copy_(tokens)
        if not str(be.device).startswith("cuda"):
            self._step(rows)
        elif rows in self.graphs:
            self.graphs[rows].replay()
        else:
            self._step(rows)  # eager first: TensorRT sets itself up for these shapes outside the capture
            self.cache_position.sub_(1)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):  # on a side stream of its own, which the engine then runs on
                self._step(rows)
            self.graphs[rows] = graph
            graph.replay()
        return self.logits[:, -1]
