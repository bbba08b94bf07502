"""TensorRT backend: the engines `videorope-trt build` wrote (engines/<target>/, as engine.json lists them).

The backend owns the KV cache: one (B, KV, capacity, D) buffer per layer for K and for V, in the engine's cache type,
allocated once per `allocate` and bound once as the decoder engine's inputs. The engine's VideoRopeCache plugin
writes each call's rows into them in place (its cache outputs alias its cache inputs, and the build keeps them inside
the engine), so nothing is allocated or copied per step. Decode steps run as CUDA graphs of the whole step
(`trt_engine.DecodeGraphs`): the attended cache length is rounded up to whole blocks of rows, so a graph is captured
once per block rather than every token. TensorRT is imported through `videorope_trt.trt`, the one module allowed to.
"""

from __future__ import annotations

from dataclasses import dataclass

from videorope_trt.runtime.backends.base import Backend, ModelInfo
from videorope_trt.runtime.backends.trt_engine import DecodeGraphs, KVCache, TrtEngine


@dataclass(frozen=True)
class TrtOptions:
    device: str = "cuda"
    target: str | None = None  # engines/<target> under the artifact; default: the only one there
    decoder: str | None = None  # the decoder engine to run when engine.json lists several (e.g. "decoder.int8-sq")


def vision_slice_ranges(entry: dict) -> list:
    """[(shortest, longest)] slice of each profile of a vision engine, from its engine.json entry (`build` writes
    one profile per range of slice lengths: TensorRT sizes each for its longest slices)."""
    return [(p["shapes"]["slice_pos_ids"][0][0], p["shapes"]["slice_pos_ids"][2][0]) for p in entry["profiles"]]


class TrtBackend(Backend):
    name = "tensorrt"
    Options = TrtOptions

    def __init__(self, vision: TrtEngine, decoder: TrtEngine, embeddings, info: ModelInfo, plan, device="cuda",
                 last_only: bool = True, vision_slices: list | None = None):
        """`last_only`: the decoder's logits are the last position's (the export's default); `vision_slices`: the
        (shortest, longest) slice of each of the vision engine's profiles, in order (`vision_slice_ranges`)."""
        super().__init__(info, device)
        self.vision, self.decoder = vision, decoder
        self.vision_slices = list(vision_slices or [])
        self.embeddings = embeddings
        self.plan = plan
        # the memory plan bounds what the engines' profiles accept
        self.max_prefill_chunk = plan.prefill_chunk
        self.max_vision_patches = plan.patches_per_chunk
        self.kv = self.graphs = None
        self.decoder_last_only = bool(last_only)

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
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        vision, decoder = (TrtEngine(trt, runtime, engine_dir / info["engines"][graphs[role]]["file"])
                           for role in ("vision", "decoder"))
        return cls(vision, decoder, embedding_table(artifact, manifest, options.device), model_info(manifest),
                   engine_info.engine_plan(engine_dir), options.device, manifest.get("logits") != "all",
                   vision_slice_ranges(info["engines"][graphs["vision"]]))

    def _stream(self):
        # torch's current stream: the inputs torch just wrote are ordered before the engine reads them
        import torch

        return torch.cuda.current_stream(self.device).cuda_stream if str(self.device).startswith("cuda") else 0

    def _encode_vision_impl(self, pixel_values, grid_thw):
        from videorope_trt.runtime.backends.base import encode_by_calls

        # the engine's profile takes at most a planned chunk of patches per call
        return encode_by_calls(pixel_values, grid_thw, self.info.spatial_merge_size, self.max_vision_patches,
                               self._vision_call)

    def _vision_call(self, pixel_values, slice_pos_ids):
        """One run of the vision engine: whole slices of one grid and the position ids of one slice."""
        import torch

        e = self.vision
        e.use_profile(self._vision_profile(len(slice_pos_ids)), self._stream())
        # kept alive until the run is queued: freed earlier, the output could be allocated over them
        feeds = {"pixel_values": pixel_values.to(e.dtypes["pixel_values"]).contiguous(),
                 "slice_pos_ids": torch.as_tensor(slice_pos_ids, device=self.device).contiguous()}
        e.bind(feeds)
        out = torch.empty(e.output_shape("image_embeds"), dtype=e.dtypes["image_embeds"], device=self.device)
        e.bind({"image_embeds": out})
        e.execute(self._stream())
        return out

    def _vision_profile(self, length: int) -> int:
        """The vision engine's first profile whose slices are `length` patches long (the only one if none is named)."""
        if not self.vision_slices:
            return 0
        for index, (lo, hi) in enumerate(self.vision_slices):
            if lo <= length <= hi:
                return index
        raise ValueError(f"tensorrt backend: the vision engine's profiles take slices of {self.vision_slices} "
                         f"patches; this call's are {length} long. Rebuild with a plan for this frame size")

    def _embed_impl(self, input_ids):
        return self.embeddings[input_ids.to(self.embeddings.device)]

    def _allocate_impl(self, batch, capacity):
        from videorope_trt.artifact.specs import cache_names

        if capacity > self.plan.max_context or batch > self.plan.batch:
            raise ValueError(
                f"tensorrt backend: the engines were built for batch <= {self.plan.batch} and context <= "
                f"{self.plan.max_context} tokens; asked for batch {batch}, context {capacity}. "
                "Rebuild with a larger plan"
            )
        self.kv = self.graphs = None  # free the old cache (and the graphs bound to it) first
        names = [n for i in range(self.info.num_layers) for n in cache_names(i)]
        self.kv = KVCache(names, batch, self.info.num_kv_heads, capacity, self.info.head_dim,
                          self.decoder.dtypes[names[0]], self.device)
        self.decoder.bound = {}  # a new cache: every binding is set again

    def run_decoder(self, embeds, positions, mask, write_offset, logits) -> None:
        """One decoder call on bound buffers: S = embeds.shape[1] tokens written at `write_offset`, attending the
        first mask.shape[1] cache rows; `logits` (B, 1 or S, vocab) f32 receives the output."""
        e = self.decoder
        e.use_profile(1 if embeds.shape[1] == 1 else 0, self._stream())  # profiles: 0 prefill, 1 decode
        e.bind(self.kv.buffers)
        e.bind({"inputs_embeds": embeds, "positions": positions, "attention_mask": mask,
                "write_offset": write_offset, "logits": logits})
        e.execute(self._stream())

    def _forward_impl(self, inputs_embeds, positions, attention_mask, logits=True):
        import torch

        e, b, s = self.decoder, inputs_embeds.shape[0], inputs_embeds.shape[1]
        embeds = inputs_embeds.to(e.dtypes["inputs_embeds"]).contiguous()
        offset = torch.full((b,), self.length, dtype=torch.int32, device=self.device)
        out = self._logits_buffer(b, s)
        self.run_decoder(embeds, positions.to(torch.float32).contiguous(),
                         attention_mask.to(torch.int64).contiguous(), offset, out)
        return out[:, -1]

    def _logits_buffer(self, batch: int, s: int):
        """The logits output of an S-token call: (B, 1, vocab) for a graph exported with last-position logits."""
        import torch

        positions = 1 if self.decoder_last_only else s
        return torch.empty((batch, positions, self.info.vocab_size), dtype=torch.float32, device=self.device)

    def _begin_decode_impl(self, attention_mask, offset, step):
        self.graphs = DecodeGraphs(self, attention_mask, offset, step, self.length)

    def _decode_step_impl(self, tokens):
        logits = self.graphs(tokens, self.length)
        self.length += 1
        return logits

    def synchronize(self):
        import torch

        if str(self.device).startswith("cuda"):
            torch.cuda.synchronize(self.device)
