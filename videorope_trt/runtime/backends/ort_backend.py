"""ONNX Runtime backend: the exported `vision.onnx` and `decoder.onnx` of an artifact directory.

CPU or CUDA execution provider. Inputs are bound from torch tensors (I/O binding: no host copies on the GPU);
the caches a call returns stay ORT values on the device and are bound as the next call's inputs. The token
embedding table is not in the graphs: it is the artifact's own (`embeddings.safetensors`).

The plugin form's `VideoRopeCache` node runs through the onnxruntime-extensions Python op (`plugins/ort_op.py`), a
float32 parity oracle; in an fp16 graph it runs as the op's decomposed form (`plugins.ort_op.inference_session`),
and the decomposed form runs on ONNX Runtime's own kernels.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from dataclasses import dataclass

import numpy as np

from videorope_trt.artifact.manifest import read_manifest
from videorope_trt.runtime.backends.base import Backend, ModelInfo


def _providers(device: str) -> list:
    import onnxruntime as ort

    if str(device).startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ValueError(f"onnxruntime backend: device {device!r} needs onnxruntime-gpu (CUDAExecutionProvider); "
                             f"this onnxruntime has {ort.get_available_providers()}")
        index = int(str(device).partition(":")[2] or 0)
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def make_session(path, device: str):
    """A session over the graph at `path` (`plugins.ort_op.inference_session`: an fp16 graph's VideoRopeCache nodes
    run as the op's decomposed definition)."""
    from videorope_trt.plugins.ort_op import inference_session

    return inference_session(path, _providers(device))


@contextlib.contextmanager
def interrupt_after_the_call():
    """Ctrl-C during an ONNX Runtime call takes effect when the call returns: a KeyboardInterrupt raised inside it
    (in a Python op's callback, or in the binding while the run holds the GIL) aborts the whole process instead of
    ending the command. Only where Python's own handler is in place, in the main thread (the only one signals reach)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    caught = []
    signal.signal(signal.SIGINT, lambda *_: caught.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if caught:
        raise KeyboardInterrupt


@dataclass(frozen=True)
class OrtOptions:
    device: str = "cpu"  # cpu, or cuda[:N] with onnxruntime-gpu
    decoder: str = "decoder"  # which decoder graph of the manifest: "decoder", or a calibrated "decoder.int8-sq"


class OrtBackend(Backend):
    name = "onnxruntime"
    Options = OrtOptions

    def __init__(self, vision, decoder, embeddings, info: ModelInfo, device="cpu"):
        super().__init__(info, device)
        self.vision, self.decoder = vision, decoder
        self.embeddings = embeddings
        self.kv_type = self._input_type(decoder, "key_cache_0")
        self.float_type = self._input_type(decoder, "inputs_embeds")
        self.caches = None

    @classmethod
    def load(cls, artifact, options: OrtOptions = OrtOptions()):
        from videorope_trt.runtime.backends.artifact_model import embedding_table, graph_path, model_info

        device = options.device
        manifest = read_manifest(artifact)
        if options.decoder.split(".", 1)[0] != "decoder":
            raise ValueError(f"onnxruntime backend: decoder {options.decoder!r} is not a decoder graph; expected "
                             "decoder or decoder.<precision>")
        vision, decoder = (graph_path(artifact, manifest, g) for g in ("vision", options.decoder))
        return cls(make_session(vision, device), make_session(decoder, device),
                   embedding_table(artifact, manifest, device), model_info(manifest), device)

    @staticmethod
    def _input_type(session, name):
        for i in session.get_inputs():
            if i.name == name:
                return {"tensor(float)": np.float32, "tensor(float16)": np.float16}[i.type]
        raise ValueError(f"onnxruntime backend: the graph has no input {name!r}; inputs "
                         f"{[i.name for i in session.get_inputs()]}")

    @property
    def _ort_device(self):
        kind = "cuda" if str(self.device).startswith("cuda") else "cpu"
        return kind, int(str(self.device).partition(":")[2] or 0)

    def _bind(self, binding, name, tensor, np_type):
        import torch

        t = tensor.contiguous()
        if np_type is np.float16:
            t = t.to(torch.float16)
        elif np_type is np.float32:
            t = t.to(torch.float32)
        kind, index = self._ort_device
        binding.bind_input(name, kind, index, np_type, tuple(t.shape), t.data_ptr())
        return t  # the caller keeps it alive until the run ends

    def _encode_vision_impl(self, pixel_values, grid_thw):
        from videorope_trt.runtime.backends.base import encode_by_calls

        return encode_by_calls(pixel_values, grid_thw, self.info.spatial_merge_size, self.max_vision_patches,
                               self._vision_call)

    def _vision_call(self, pixel_values, slice_pos_ids):
        """One run of the vision graph: whole slices of one grid and the position ids of one slice."""
        import torch

        binding, keep = self.vision.io_binding(), []
        keep.append(self._bind(binding, "pixel_values", pixel_values, self._input_type(self.vision, "pixel_values")))
        keep.append(self._bind(binding, "slice_pos_ids", torch.as_tensor(slice_pos_ids, device=self.device), np.int64))
        binding.bind_output("image_embeds", *self._ort_device)
        with interrupt_after_the_call():
            self.vision.run_with_iobinding(binding)
        return self._to_torch(binding.get_outputs()[0]).float()

    def _embed_impl(self, input_ids):
        return self.embeddings[input_ids.to(self.embeddings.device)].float()

    def _allocate_impl(self, batch, capacity):
        from onnxruntime import OrtValue

        shape = (batch, self.info.num_kv_heads, capacity, self.info.head_dim)
        kind, index = self._ort_device
        self.caches = None  # release the old ones first
        self.caches = [OrtValue.ortvalue_from_numpy(np.zeros(shape, self.kv_type), kind, index)
                       for _ in range(2 * self.info.num_layers)]

    def _forward_impl(self, inputs_embeds, positions, attention_mask, logits=True):
        """The graph writes this call's rows into its cache inputs and returns the updated caches (ONNX has no
        in-place update): they are this backend's caches from now on, bound as the next call's inputs."""
        import torch

        from videorope_trt.artifact.specs import cache_names, cache_out_names

        binding, keep = self.decoder.io_binding(), []
        keep.append(self._bind(binding, "inputs_embeds", inputs_embeds, self.float_type))
        keep.append(self._bind(binding, "positions", positions, np.float32))
        keep.append(self._bind(binding, "attention_mask", attention_mask, np.int64))
        offset = torch.full((self.batch,), self.length, dtype=torch.int32, device=self.device)
        keep.append(self._bind(binding, "write_offset", offset, np.int32))
        names = [n for i in range(self.info.num_layers) for n in cache_names(i)]
        for name, value in zip(names, self.caches):
            binding.bind_ortvalue_input(name, value)
        binding.bind_output("logits", *self._ort_device)
        for i in range(self.info.num_layers):
            for n in cache_out_names(i):
                binding.bind_output(n, *self._ort_device)
        with interrupt_after_the_call():
            self.decoder.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        self.caches = outputs[1:]
        return self._to_torch(outputs[0])[:, -1].float()

    def _to_torch(self, value):
        import torch

        if self._ort_device[0] == "cpu":
            return torch.from_numpy(value.numpy())
        return torch.from_dlpack(value)  # stays on the GPU

    def synchronize(self):
        if self._ort_device[0] == "cuda":
            import torch

            torch.cuda.synchronize(self.device)
