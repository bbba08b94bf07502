"""TensorRT backend: the engines `videorope-trt build` wrote (engines/<target>/{vision,decoder}.engine).

Works with TensorRT 10.x (Jetson's 10.3 included) and 11.x: only the name-based tensor API is used
(`num_io_tensors`, `get_tensor_name`, `set_input_shape`, `set_tensor_address`, `execute_async_v3`), which both
have. TensorRT itself is imported through `videorope_trt.trt`, the one module allowed to.

KV cache: the decoder graph reads past (B, KV, P, D) and writes present (B, KV, P+S, D), both dense. Two
preallocated buffers per layer, each of B*KV*capacity*D elements, take turns: the past is a dense view of the
front of one, the present is written into the other, then they swap. Nothing is allocated per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from videorope_trt.runtime.backends.base import Backend, ModelInfo

#: TensorRT DataType member name → torch dtype name.
TRT_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT64": "int64", "INT32": "int32",
              "INT8": "int8", "BOOL": "bool", "FP8": "float8_e4m3fn"}


def torch_dtype(trt_dtype):
    import torch

    name = getattr(trt_dtype, "name", str(trt_dtype).rpartition(".")[2])
    if name not in TRT_DTYPES:
        raise ValueError(f"tensorrt backend: no torch dtype for TensorRT {name}; known {sorted(TRT_DTYPES)}")
    return getattr(torch, TRT_DTYPES[name])


class PingPongKV:
    """Per layer and per K/V, two flat buffers; `past(i)` views the filled one, `present(i, total)` the other."""

    def __init__(self, num_layers, batch, kv_heads, capacity, head_dim, dtype, device):
        import torch

        self.shape = (batch, kv_heads, head_dim)
        n = batch * kv_heads * capacity * head_dim
        self.buffers = [[torch.empty(n, dtype=dtype, device=device) for _ in range(2)] for _ in range(2 * num_layers)]
        self.current = 0  # which of the two holds the past
        self.length = 0

    def _view(self, flat, length):
        b, h, d = self.shape
        return flat[: b * h * length * d].view(b, h, length, d)

    def past(self, i):
        return self._view(self.buffers[i][self.current], self.length)

    def present(self, i, total):
        return self._view(self.buffers[i][1 - self.current], total)

    def advance(self, total):
        self.current, self.length = 1 - self.current, total


class Engine:
    """One deserialized engine and its execution context; tensors bound by name."""

    def __init__(self, trt, runtime, path: Path):
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

    def use_profile(self, index: int, stream) -> None:
        if index != self.profile and index < self.engine.num_optimization_profiles:
            self.context.set_optimization_profile_async(index, stream)
            self.profile = index

    def run(self, feeds: dict, outputs: dict, stream) -> None:
        """feeds/outputs: name → contiguous torch tensor (outputs already sized)."""
        for name, t in feeds.items():
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        for name, t in outputs.items():
            self.context.set_tensor_address(name, t.data_ptr())
        if not self.context.execute_async_v3(stream):
            raise RuntimeError("tensorrt backend: execute_async_v3 failed (see the TensorRT log above)")

    def output_shape(self, name) -> tuple:
        return tuple(self.context.get_tensor_shape(name))


@dataclass(frozen=True)
class TrtOptions:
    device: str = "cuda"
    target: str | None = None  # engines/<target> under the artifact; default: the only one there
    decoder: str | None = None  # the decoder engine to run when engine.json lists several (e.g. "decoder.int8-sq")


class TrtBackend(Backend):
    name = "tensorrt"
    Options = TrtOptions

    def __init__(self, trt, engine_dir: Path, engines: dict, embeddings, info: ModelInfo, plan, device="cuda"):
        """`engines`: {"vision": file, "decoder": file} in `engine_dir`."""
        super().__init__(info, device)
        self.trt = trt
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.vision = Engine(trt, self.runtime, engine_dir / engines["vision"])
        self.decoder = Engine(trt, self.runtime, engine_dir / engines["decoder"])
        self.embeddings = embeddings
        self.plan = plan
        # the memory plan bounds what the engines' profiles accept
        self.max_prefill_chunk = plan.prefill_chunk
        self.max_vision_patches = plan.patches_per_chunk
        self.kv = None

    @classmethod
    def load(cls, artifact, options: TrtOptions = TrtOptions()):
        """The engines engine.json lists (checked against this machine and against the artifact's graphs), the
        artifact's embedding table and model record."""
        from videorope_trt import trt as trtmod
        from videorope_trt.artifact import engine_info
        from videorope_trt.artifact.manifest import read_manifest
        from videorope_trt.runtime.backends.artifact_model import embedding_table, model_info

        engine_dir = engine_info.find_engine_dir(artifact, options.target)
        trt = trtmod.import_trt(engine_info.read_engine_info(engine_dir)["flavour"])
        # the TensorRT version and GPU of this machine against the build's
        info = engine_info.check_engine_dir(engine_dir, running_version=trtmod.version(trt), gpu=trtmod.current_gpu())
        graphs = engine_info.select_engines(info, engine_dir, options.decoder)
        engine_info.check_engine_sources(info, engine_dir, artifact, graphs.values())
        if info.get("plugin_library"):
            trtmod.load_plugin_library(trt, info["plugin_library"]["path"])
        manifest = read_manifest(artifact)
        files = {role: info["engines"][g]["file"] for role, g in graphs.items()}
        return cls(trt, engine_dir, files, embedding_table(artifact, manifest, options.device), model_info(manifest),
                   engine_info.engine_plan(engine_dir), options.device)

    def _stream(self):
        # torch's current stream: the inputs torch just wrote are ordered before the engine reads them
        import torch

        return torch.cuda.current_stream(self.device).cuda_stream

    def _encode_vision_impl(self, pixel_values, grid_thw):
        import torch

        from videorope_trt.artifact.vision_inputs import host_inputs

        host = host_inputs(grid_thw.cpu().numpy(), self.info.spatial_merge_size)
        e = self.vision
        feeds = {"pixel_values": pixel_values.to(e.dtypes["pixel_values"]).contiguous()}
        feeds.update({k: torch.as_tensor(v, device=self.device).contiguous() for k, v in host.items()})
        for name, t in feeds.items():
            e.context.set_input_shape(name, tuple(t.shape))
        out = torch.empty(e.output_shape("image_embeds"), dtype=e.dtypes["image_embeds"], device=self.device)
        e.run(feeds, {"image_embeds": out}, self._stream())
        return out.float()

    def _embed_impl(self, input_ids):
        return self.embeddings[input_ids.to(self.embeddings.device)].float()

    def _allocate_impl(self, batch, capacity):
        if capacity > self.plan.max_context or batch > self.plan.batch:
            raise ValueError(
                f"tensorrt backend: the engines were built for batch <= {self.plan.batch} and context <= "
                f"{self.plan.max_context} tokens; asked for batch {batch}, context {capacity}. Rebuild with a larger plan"
            )
        self.kv = None  # free the old cache first
        dtype = self.decoder.dtypes["past_key_0"]
        self.kv = PingPongKV(self.info.num_layers, batch, self.info.num_kv_heads, capacity, self.info.head_dim,
                             dtype, self.device)

    def _forward_impl(self, inputs_embeds, positions, attention_mask, logits=True):
        # the exported decoder always computes the logits (`logits` changes nothing here)
        import torch

        from videorope_trt.artifact.specs import past_names, present_names

        e, kv = self.decoder, self.kv
        s = inputs_embeds.shape[1]
        total = kv.length + s
        e.use_profile(1 if s == 1 else 0, self._stream())  # profiles: 0 prefill, 1 decode (build/engine.py)
        feeds = {"inputs_embeds": inputs_embeds.to(e.dtypes["inputs_embeds"]).contiguous(),
                 "positions": positions.to(torch.float32).contiguous(),
                 "attention_mask": attention_mask.to(torch.int64).contiguous()}
        outputs = {}
        for i in range(self.info.num_layers):
            for j, (p, q) in enumerate(zip(past_names(i), present_names(i))):
                feeds[p] = kv.past(2 * i + j)
                outputs[q] = kv.present(2 * i + j, total)
        for name, t in feeds.items():
            e.context.set_input_shape(name, tuple(t.shape))
        outputs["logits"] = torch.empty(e.output_shape("logits"), dtype=e.dtypes["logits"], device=self.device)
        e.run(feeds, outputs, self._stream())
        kv.advance(total)
        return outputs["logits"][:, -1].float()

    def synchronize(self):
        import torch

        torch.cuda.synchronize(self.device)
