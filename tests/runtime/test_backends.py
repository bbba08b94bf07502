"""Backends: greedy tokens identical across PyTorch and ONNX Runtime on the tiny model at fp32; the shared
interface's checks; the TensorRT backend's pieces that run without TensorRT (its engines need a GPU + TensorRT)."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from videorope_trt.artifact.engine_info import find_engine_dir
from videorope_trt.runtime.backends import Backend, ModelInfo, backend_class, open_backend
from videorope_trt.runtime.backends.trt_engine import torch_dtype
from videorope_trt.runtime.generate import GenerationConfig, generate

GRID = (3, 4, 6)


# -- cross-backend parity ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tiny_ckpt):
    return tiny_ckpt


@pytest.fixture(scope="module", params=["decomposed", "plugin"])
def artifact(request, tiny, tmp_path_factory):
    from videorope_trt.export.exporter import ExportConfig, export_checkpoint

    out = tmp_path_factory.mktemp(f"art-{request.param}") / "out"
    export_checkpoint(tiny, out, ExportConfig(rotary_form=request.param))
    return out


@pytest.fixture(scope="module")
def inputs(tiny):
    from videorope_trt.media import prompt

    tok = prompt.load_tokenizer_json(tiny)
    rows = [prompt.prompt_ids(tok, q, 18) for q in ("What moves?", "How many shapes are visible at the start?")]
    rng = np.random.default_rng(5)
    pixels = rng.standard_normal((int(np.prod(GRID)), 1176), dtype=np.float32)
    video = SimpleNamespace(pixel_values=pixels, grid_thw=GRID)
    return rows, video


def test_greedy_tokens_identical_torch_and_onnxruntime(tiny, artifact, inputs):
    from videorope_trt.runtime.backends import open_backend

    rows, video = inputs
    torch_be = open_backend("torch", tiny)
    ort_be = open_backend("onnxruntime", artifact)
    assert ort_be.info == torch_be.info  # same variant, params and token ids from manifest + checkpoint
    config = GenerationConfig(max_new_tokens=8, prefill_chunk=16, vision_chunk=2, stop_at_eos=False)
    a, b = generate(torch_be, rows, video, config), generate(ort_be, rows, video, config)
    assert a.tokens == b.tokens
    # and the logits behind them agree closely (prefill of the whole batch, one chunk)
    for be in (torch_be, ort_be):
        be.allocate(1, 40)
    emb = torch_be.embed(torch.as_tensor([rows[0][:40]]))
    pos = torch.arange(40, dtype=torch.float32).expand(3, 1, 40).contiguous()
    mask = torch.ones(1, 40, dtype=torch.int64)
    torch.testing.assert_close(ort_be.forward(emb, pos, mask), torch_be.forward(emb, pos, mask), atol=1e-4, rtol=1e-4)


#: images and videos of different sizes in one vision call (the ONNX Runtime and TensorRT backends: a call per grid)
VISION_GRIDS = [[3, 4, 4], [1, 2, 2], [1, 4, 8], [2, 4, 6]]


def _stock_vision(tiny, grids, seed=1):
    """Random patches for `grids` and transformers' stock tower's embeddings of them (the reference)."""
    from videorope_trt.models import load_model

    n = sum(t * h * w for t, h, w in grids)
    pixels = torch.from_numpy(np.random.default_rng(seed).standard_normal((n, 1176), dtype=np.float32))
    with torch.no_grad():
        return pixels, load_model(tiny).visual(pixels, grid_thw=torch.tensor(grids)).pooler_output


def test_onnxruntime_vision_encodes_grids_of_every_size(tiny, artifact):
    pixels, ref = _stock_vision(tiny, VISION_GRIDS)
    out = open_backend("onnxruntime", artifact).encode_vision(pixels, torch.tensor(VISION_GRIDS))
    assert out.shape == ref.shape and float((out - ref).norm() / ref.norm()) <= 1e-5


# -- the shared interface ------------------------------------------------------------------------------------------

class Echo(Backend):
    """A backend whose logits say which tokens it saw: enough to test the interface's bookkeeping."""

    name = "echo"

    def _encode_vision_impl(self, pixel_values, grid_thw):
        return pixel_values[::4, :8]

    def _embed_impl(self, input_ids):
        return input_ids[..., None].float().expand(*input_ids.shape, 8)

    def _allocate_impl(self, batch, capacity):
        pass

    def _forward_impl(self, inputs_embeds, positions, attention_mask, logits=True):
        return torch.nn.functional.one_hot(inputs_embeds[:, -1, 0].long(), 16).float()


_VISION = {"depth": 1, "embed_dim": 8, "num_heads": 1, "spatial_merge_size": 2}
INFO = ModelInfo.from_config({"hidden_size": 8, "num_attention_heads": 1, "num_hidden_layers": 1,
                              "intermediate_size": 8, "vocab_size": 16, "pad_token_id": 0, "eos_token_id": 15,
                              "video_token_id": 14, "vision_config": _VISION})


def test_onnxruntime_runs_an_fp16_plugin_form_graph_as_the_ops_definition(tiny, inputs, tmp_path):
    """The op's ONNX Runtime kernel is float32 only (loading an fp16 plugin-form decoder used to end in an
    InvalidGraph traceback): its VideoRopeCache nodes run as their decomposed definition, so the fp16 plugin-form
    artifact answers as the fp16 decomposed export does, token for token."""
    from videorope_trt.export.exporter import ExportConfig, export_checkpoint

    rows, video = inputs
    config = GenerationConfig(max_new_tokens=6, prefill_chunk=16, vision_chunk=2, stop_at_eos=False)
    tokens = {}
    for form in ("plugin", "decomposed"):
        out = tmp_path / form
        export_checkpoint(tiny, out, ExportConfig(rotary_form=form, precision="fp16"))
        backend = open_backend("onnxruntime", out)
        assert backend.kv_type is np.float16
        tokens[form] = generate(backend, rows, video, config).tokens
    assert tokens["plugin"] == tokens["decomposed"]


def test_ctrl_c_inside_an_onnxruntime_call_takes_effect_when_it_returns():
    """Raised inside the call (a Python op's callback), a KeyboardInterrupt aborts the process; deferred, the call
    finishes and the command then ends as Ctrl-C ends it everywhere else."""
    import os
    import signal

    from videorope_trt.runtime.backends.ort_backend import interrupt_after_the_call

    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("this process does not have Python's own SIGINT handler, which the deferral replaces")
    finished = []
    with pytest.raises(KeyboardInterrupt):
        with interrupt_after_the_call():
            os.kill(os.getpid(), signal.SIGINT)
            finished.append(sum(range(1000)))  # bytecode after the signal: Python's handler has run by now
    assert finished == [499500] and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_interface_checks_capacity_mask_and_order():
    be = Echo(INFO)
    with pytest.raises(ValueError, match="call allocate"):
        be.forward(torch.zeros(1, 2, 8), torch.zeros(3, 1, 2), torch.ones(1, 2, dtype=torch.int64))
    be.allocate(1, 4)
    with pytest.raises(ValueError, match=r"attention_mask must cover cached \+ new tokens"):
        be.forward(torch.zeros(1, 2, 8), torch.zeros(3, 1, 2), torch.ones(1, 3, dtype=torch.int64))
    mask = torch.ones(1, 3, dtype=torch.int64)
    assert be.forward(torch.zeros(1, 3, 8), torch.zeros(3, 1, 3), mask, logits=False) is None
    assert be.length == 3  # the tokens went into the cache all the same
    with pytest.raises(ValueError, match="exceed the KV cache capacity 4"):
        be.forward(torch.zeros(1, 2, 8), torch.zeros(3, 1, 2), torch.ones(1, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match="positions must be"):
        be.forward(torch.zeros(1, 1, 8), torch.zeros(3, 2, 1), torch.ones(1, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="grid_thw"):
        be.encode_vision(torch.zeros(8, 4), torch.tensor([[1, 2, 2]]))


def test_registry_names_every_backend_and_rejects_unknown():
    assert backend_class("torch").name == "torch"
    assert backend_class("onnxruntime").name == "onnxruntime"
    assert backend_class("tensorrt").name == "tensorrt"
    with pytest.raises(ValueError, match="unknown backend 'trt'; expected one of"):
        backend_class("trt")


def test_model_info_from_qwen2vl_config():
    config = {"hidden_size": 1536, "num_attention_heads": 12, "num_key_value_heads": 2, "num_hidden_layers": 28,
              "vocab_size": 151936, "bos_token_id": 151643, "eos_token_id": [151645, 151643],
              "video_token_id": 151656, "intermediate_size": 8960, "vision_config": _VISION}
    info = ModelInfo.from_config(config, "videorope", {"delta": 2.0})
    assert (info.head_dim, info.num_kv_heads, info.num_layers) == (128, 2, 28)
    assert info.eos_token_ids == (151645, 151643) and info.pad_token_id == 151643
    assert info.position_params == {"delta": 2.0}


def test_stop_token_from_the_model_ends_generation():
    # Echo's logits repeat the last token: a prompt ending in 15 (eos) stops at once, one ending in 3 never does
    be = Echo(INFO)
    got = generate(be, [[1, 2, 15], [1, 3]], None, GenerationConfig(max_new_tokens=5))
    assert got.tokens == [[], [3, 3, 3, 3, 3]]


# -- TensorRT backend pieces ---------------------------------------------------------------------------------------

class _Context:
    """Records what the backend binds, as TensorRT's execution context would receive it."""

    def __init__(self):
        self.calls = []

    def set_input_shape(self, name, shape):
        self.calls.append(("shape", name, shape))

    def set_tensor_address(self, name, address):
        self.calls.append(("address", name, address))

    def set_optimization_profile_async(self, index, stream):
        self.calls.append(("profile", index))


class _DecoderEngine:
    """A decoder "engine" on the CPU: the exported graph's torch module over the tensors the backend binds, its
    caches written in place as the engine's VideoRopeCache plugin writes them (what TensorRT's aliasing gives)."""

    def __init__(self, model, num_layers):
        from videorope_trt.artifact.specs import cache_names
        from videorope_trt.export.decoder import DecoderGraph
        from videorope_trt.runtime.backends.trt_engine import TrtEngine

        self.engine = TrtEngine.__new__(TrtEngine)
        self.engine.context, self.engine.bound, self.engine.profile = _Context(), {}, 0
        self.engine.engine = SimpleNamespace(num_optimization_profiles=2)  # prefill and decode
        self.engine.inputs = ["inputs_embeds", "positions", "attention_mask", "write_offset"] + [
            n for i in range(num_layers) for n in cache_names(i)]
        self.engine.dtypes = {n: torch.float32 for n in self.engine.inputs}
        self.graph, self.caches, self.tensors = DecoderGraph(model), self.engine.inputs[4:], {}
        bind = self.engine.bind
        self.engine.bind = lambda tensors: (self.tensors.update(tensors), bind(tensors))
        self.engine.execute = self.execute

    def execute(self, stream):
        t = self.tensors
        with torch.no_grad():
            out = self.graph(*[t[n] for n in self.engine.inputs])
        t["logits"].copy_(out[0])
        for name, new in zip(self.caches, out[1:]):
            t[name].copy_(new)  # in place: the backend's own buffers


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_tensorrt_backend_owns_one_cache_and_binds_it_once(tiny, device):
    """The TensorRT backend's bookkeeping over a CPU stand-in for the decoder engine: the same greedy tokens as the
    torch backend (prefill chunks at the right offsets, decode steps attending whole blocks of rows), one cache
    per layer bound once, the decode steps' blocks of rows, and bindings set only when they change."""
    from videorope_trt.build.plan import PlanRequest, plan_memory
    from videorope_trt.runtime.backends.trt_backend import TrtBackend
    from videorope_trt.runtime.backends.trt_engine import DECODE_ROWS, decode_rows

    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (the decode steps then replay captured CUDA graphs)")
    ref = open_backend("torch", tiny, device=device, dtype="float32", reference=True)
    fake = _DecoderEngine(ref.model, ref.info.num_layers)
    plan = plan_memory(tiny, "h100", PlanRequest(max_context=1024, prefill_chunk=64, batch=2))
    table = ref.model.text_model.embed_tokens.weight.detach()
    be = TrtBackend(None, fake.engine, table, ref.info, plan, device=device)
    rows = [[5 + (i * 7) % 50 for i in range(n)] for n in (150, 97)]  # two prompts, left padded; 3 chunks
    config = GenerationConfig(max_new_tokens=140, prefill_chunk=64, stop_at_eos=False)  # decode crosses row 256
    assert generate(be, rows, None, config).tokens == generate(ref, rows, None, config).tokens
    kv = be.kv.buffers
    assert len(kv) == 2 * ref.info.num_layers and all(t.shape[2] == 150 + config.max_new_tokens for t in kv.values())
    addresses = [c for c in fake.engine.context.calls if c[0] == "address" and c[1] in kv]
    assert {c[2] for c in addresses} == {t.data_ptr() for t in kv.values()}  # its own buffers, nothing else
    assert len(addresses) == 2 * len(kv)  # once per profile (prefill, decode) for the whole generation
    assert [c for c in fake.engine.context.calls if c[0] == "profile"] == [("profile", 1)]
    masks = [c[2] for c in fake.engine.context.calls if c[0] == "shape" and c[1] == "attention_mask"]
    assert masks[:3] == [(2, 64), (2, 128), (2, 150)]  # the prefill chunks attend the rows written so far
    # then the decode steps attend whole blocks of rows: one shape (and one captured graph) per block
    assert masks[3:] == [(2, DECODE_ROWS), (2, 290)] == [(2, decode_rows(c, 290)) for c in (150, 256)]
    assert decode_rows(255, 10_000) == 256 and decode_rows(256, 10_000) == 512 and decode_rows(300, 400) == 400
    assert len(be.graphs.graphs) == (2 if device == "cuda" else 0)  # one CUDA graph per block of rows


class _VisionEngine:
    """A vision "engine" on the CPU: the exported graph's torch module over the tensors the backend binds, with as
    many profiles as the build gives it."""

    def __init__(self, visual, profiles: int):
        from videorope_trt.export.vision import VisionGraph
        from videorope_trt.runtime.backends.trt_engine import TrtEngine

        self.engine = TrtEngine.__new__(TrtEngine)
        self.engine.context, self.engine.bound, self.engine.profile = _Context(), {}, 0
        self.engine.engine = SimpleNamespace(num_optimization_profiles=profiles)
        self.engine.inputs = ["pixel_values", "slice_pos_ids"]
        self.engine.dtypes = {"pixel_values": torch.float32, "slice_pos_ids": torch.int64,
                              "image_embeds": torch.float32}
        self.graph, self.tensors, self.runs = VisionGraph(visual), {}, []
        bind = self.engine.bind
        self.engine.bind = lambda tensors: (self.tensors.update(tensors), bind(tensors))
        width = visual.merger.mlp[2].out_features
        self.engine.output_shape = lambda name: (self.tensors["pixel_values"].shape[0] // 4, width)
        self.engine.execute = self.execute

    def execute(self, stream):
        px, ids = self.tensors["pixel_values"], self.tensors["slice_pos_ids"]
        self.runs.append((px.shape[0], ids.shape[0], self.engine.profile))
        with torch.no_grad():
            self.tensors["image_embeds"].copy_(self.graph(px, ids))


def test_tensorrt_backend_encodes_whole_slices_of_one_grid_per_call(tiny):
    """The TensorRT backend's vision calls over a CPU stand-in for the engine, with the profiles the build writes
    into engine.json: one grid per call, in chunks of whole slices within the plan's patches per call, each call on
    the profile of its slice length; the embeddings are the stock tower's."""
    from videorope_trt.artifact.specs import vision_spec
    from videorope_trt.build import engine as B
    from videorope_trt.build.plan import PlanRequest, plan_memory
    from videorope_trt.models import load_model
    from videorope_trt.runtime.backends.trt_backend import TrtBackend, vision_slice_ranges

    model = load_model(tiny)
    info = ModelInfo.from_config(json.loads((tiny / "config.json").read_text()))
    # 56x56 frames: 16 patches per slice, 2 slices per call; profiles for slices of 4-16 and 16-32 patches
    plan = plan_memory(tiny, "h100", PlanRequest(max_context=1024, frames_per_chunk=4, frame_size=(56, 56)))
    profiles = B.profile_shapes(vision_spec(info).to_json()["inputs"], "vision", plan)
    entry = json.loads(json.dumps({"profiles": [{"name": n, "shapes": sh} for n, sh in profiles]}))  # as engine.json
    assert vision_slice_ranges(entry) == [(4, 16), (16, 32)] and plan.patches_per_chunk == 32
    fake = _VisionEngine(model.visual, len(profiles))
    be = TrtBackend(fake.engine, None, None, info, plan, device="cpu", vision_slices=vision_slice_ranges(entry))
    pixels, ref = _stock_vision(tiny, VISION_GRIDS)
    out = be.encode_vision(pixels, torch.tensor(VISION_GRIDS))
    assert out.shape == ref.shape and float((out - ref).norm() / ref.norm()) <= 1e-5
    # (patches, slice length, profile) of each run: 3 slices of 16 in calls of 2 and 1, a slice of 4, one of 32 (the
    # second profile), 2 slices of 24 in a call each (the second profile's)
    assert fake.runs == [(32, 16, 0), (16, 16, 0), (4, 4, 0), (32, 32, 1), (24, 24, 1), (24, 24, 1)]
    assert [c for c in fake.engine.context.calls if c[0] == "profile"] == [("profile", 1)]  # switched once
    with pytest.raises(ValueError, match=r"slice of grid \(1, 6, 8\) has 48 patches; a call takes at most 32"):
        be.encode_vision(torch.zeros(48, 1176), torch.tensor([[1, 6, 8]]))


def test_torch_dtype_of_tensorrt_types():
    assert torch_dtype(SimpleNamespace(name="HALF")) is torch.float16
    assert torch_dtype(SimpleNamespace(name="INT64")) is torch.int64
    with pytest.raises(ValueError, match="no torch dtype for TensorRT INT4"):
        torch_dtype(SimpleNamespace(name="INT4"))


def test_find_engine_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected one engine directory"):
        find_engine_dir(tmp_path)
    (tmp_path / "engines" / "h200").mkdir(parents=True)
    (tmp_path / "engines" / "h200" / "engine.json").write_text(json.dumps({}))
    assert find_engine_dir(tmp_path).name == "h200"
    assert find_engine_dir(tmp_path, "orin-agx").name == "orin-agx"


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_tensorrt_greedy_tokens_match_torch(tiny, inputs, tmp_path):
    from videorope_trt import trt as trtmod

    if not trtmod.available("tensorrt") or not torch.cuda.is_available():
        pytest.skip("needs full TensorRT and a CUDA GPU")
    from videorope_trt.build.engine import BuildRequest, build_engines
    from videorope_trt.export.exporter import ExportConfig, export_checkpoint
    from videorope_trt.runtime.backends import open_backend

    out = tmp_path / "out"
    export_checkpoint(tiny, out, ExportConfig(rotary_form="decomposed"))
    target = build_engines(out, BuildRequest(target="h200"))["target"]
    rows, video = inputs
    config = GenerationConfig(max_new_tokens=8, prefill_chunk=16, stop_at_eos=False)
    a = generate(open_backend("torch", tiny, device="cuda", dtype="float32", compile=False), rows, video, config)
    b = generate(open_backend("tensorrt", out, target=target), rows, video, config)
    assert a.tokens == b.tokens


# -- PyTorch static-cache fast path --------------------------------------------------------------------------------

def _static_and_reference(tiny, device="cpu", **static_options):
    from videorope_trt.runtime.backends.torch.backend import TorchBackend, TorchOptions

    ref = TorchBackend.load(tiny, TorchOptions(device=device, dtype="float32", reference=True))
    fast = TorchBackend(ref.model, ref.info, TorchOptions(device=device, **{"compile": False, **static_options}))
    return fast, ref


def test_static_cache_path_matches_the_model_decoder(tiny, inputs):
    fast, ref = _static_and_reference(tiny)
    rows, video = inputs
    # logits after a chunked prefill and three decode steps, both paths fed the same tokens
    for be in (fast, ref):
        be.allocate(2, 64)
    g = torch.Generator().manual_seed(0)
    embeds = torch.randn(2, 30, fast.info.hidden_size, generator=g)
    pos = torch.arange(30, dtype=torch.float32).expand(3, 2, 30).contiguous()
    mask = torch.ones(2, 30, dtype=torch.int64)
    mask[1, :7] = 0  # left padding on sample 1
    for s0, s1 in ((0, 11), (11, 30), (30, 31), (31, 32), (32, 33)):
        if s0 >= 30:  # decode: one new token
            e = torch.randn(2, 1, fast.info.hidden_size, generator=g)
            p = torch.full((3, 2, 1), float(s0))
            mask = torch.cat([mask, torch.ones(2, 1, dtype=torch.int64)], 1)
            a, b = fast.forward(e, p, mask), ref.forward(e, p, mask)
        else:
            a = fast.forward(embeds[:, s0:s1], pos[:, :, s0:s1], mask[:, :s1])
            b = ref.forward(embeds[:, s0:s1], pos[:, :, s0:s1], mask[:, :s1])
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)
    config = GenerationConfig(max_new_tokens=6, prefill_chunk=16, stop_at_eos=False)
    assert generate(fast, rows, video, config).tokens == generate(ref, rows, video, config).tokens


def _assert_unpadded_prefill_matches(fast, ref, length: int, cuts, seed: int):
    """One unpadded row of `length` random embeddings prefilled in chunks cut at `cuts`: logits as the model's
    decoder gives them, chunk by chunk."""
    g = torch.Generator().manual_seed(seed)
    embeds = torch.randn(1, length, fast.info.hidden_size, generator=g)
    pos = torch.arange(length, dtype=torch.float32).expand(3, 1, length).contiguous()
    mask = torch.ones(1, length, dtype=torch.int64)
    for be in (fast, ref):
        be.allocate(1, 32)
    for s0, s1 in zip((0,) + tuple(cuts), tuple(cuts) + (length,)):
        a = fast.forward(embeds[:, s0:s1], pos[:, :, s0:s1], mask[:, :s1])
        b = ref.forward(embeds[:, s0:s1], pos[:, :, s0:s1], mask[:, :s1])
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)


def test_prefill_chunks_without_logits_fill_the_same_cache(tiny):
    """logits=False (every chunk but the last, in `generate`) skips the last layer's attention and MLP and the
    lm_head: the cache rows are those of chunks run with logits, and the last chunk's logits and the next decode
    step's are the model decoder's. Two left-padded rows, so the boolean mask's last row is what is attended."""
    fast, ref = _static_and_reference(tiny)
    full, _ = _static_and_reference(tiny)
    g = torch.Generator().manual_seed(4)
    embeds = torch.randn(2, 30, fast.info.hidden_size, generator=g)
    pos = torch.arange(30, dtype=torch.float32).expand(3, 2, 30).contiguous()
    mask = torch.ones(2, 30, dtype=torch.int64)
    mask[0, :5] = 0
    for be in (fast, full, ref):
        be.allocate(2, 40)
    for s0, s1 in ((0, 13), (13, 14), (14, 30)):  # a one-token chunk too (the decode form of the mask)
        args = (embeds[:, s0:s1], pos[:, :, s0:s1], mask[:, :s1])
        a, b, c = fast.forward(*args, logits=s1 == 30), full.forward(*args), ref.forward(*args)
        assert (a is None) == (s1 < 30) and fast.length == s1
        torch.testing.assert_close(b, c, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(a, c, atol=2e-5, rtol=1e-5)
    for i in range(len(fast.fast.layers)):  # the same kernels wrote them: equal, not close
        assert torch.equal(fast.fast.keys[i], full.fast.keys[i])
        assert torch.equal(fast.fast.values[i], full.fast.values[i])
    e, p = torch.randn(2, 1, fast.info.hidden_size, generator=g), torch.full((3, 2, 1), 30.0)
    mask = torch.cat([mask, torch.ones(2, 1, dtype=torch.int64)], 1)
    torch.testing.assert_close(fast.forward(e, p, mask), ref.forward(e, p, mask), atol=2e-5, rtol=1e-5)


def test_static_cache_prefill_without_padding_uses_the_causal_form(tiny):
    # one unpadded row: the prefill chunks take the mask-free causal path; logits as the model's decoder gives them
    from torch.nn.attention.bias import CausalBias

    fast, ref = _static_and_reference(tiny)
    fast.allocate(1, 32)
    mask = torch.ones(1, 9, dtype=torch.int64)
    assert isinstance(fast.fast._mask(mask, torch.arange(9), 9, 9), CausalBias)
    _assert_unpadded_prefill_matches(fast, ref, 27, (9, 26), seed=1)


def test_split_prefill_is_refused_where_cudnn_attention_cannot_run(tiny):
    """The CPU has no cuDNN attention: asking for the split form is an error that says so, never a silent other path."""
    with pytest.raises(ValueError, match="split_prefill runs cuDNN's attention, which needs a CUDA device"):
        _static_and_reference(tiny, split_prefill=True)
    from videorope_trt.runtime.kernels.prefill_attention import cudnn_attention_problem

    assert "needs a CUDA device" in cudnn_attention_problem(4, 2, 8, torch.float32, "cpu")


def test_backend_options_are_checked_by_name(tiny, artifact):
    """An option a backend does not have is refused with the ones it takes, on every backend."""
    with pytest.raises(ValueError, match=r"the onnxruntime backend has no option dtype; it takes device, decoder"):
        open_backend("onnxruntime", artifact, dtype="float16")
    with pytest.raises(ValueError, match=r"the torch backend has no option gemv; it takes device, dtype, compile"):
        open_backend("torch", tiny, gemv=False)
    with pytest.raises(ValueError, match=r"the tensorrt backend has no option compile"):
        open_backend("tensorrt", artifact, compile=True)
    with pytest.raises(ValueError, match=r"dtype 'int8' is not one of"):
        open_backend("torch", tiny, dtype="int8")


def test_static_cache_prefill_mlp_in_pieces_matches_the_model_decoder(tiny, monkeypatch):
    """A chunk's MLP run a few tokens per call, in place (4 here, pieces of 4, 4, 4, 1 and a whole 3): same logits."""
    from videorope_trt.runtime.backends.torch import static_decoder as static_cache

    fast, ref = _static_and_reference(tiny)
    inter = ref.model.text_model.layers[0].mlp.down_proj.in_features
    monkeypatch.setattr(static_cache, "MLP_BYTES", 2 * inter * 4 * 4 + 3)  # fp32: 4 tokens and a bit
    _assert_unpadded_prefill_matches(fast, ref, 16, (13,), seed=2)
    assert fast.fast.mlp_rows == 4


def test_split_decode_attention_matches_repeated_heads_softmax():
    from videorope_trt.runtime.backends.torch.static_decoder import SPLIT, decode_attention

    g = torch.Generator().manual_seed(3)
    b, kv, groups, d, rows = 2, 3, 4, 16, 2 * SPLIT
    q = torch.randn(b, kv * groups, 1, d, generator=g, dtype=torch.float64)
    keys, values = (torch.randn(b, kv, rows, d, generator=g, dtype=torch.float64) for _ in range(2))
    allowed = torch.zeros(b, rows, dtype=torch.bool)
    allowed[0, :300] = True
    allowed[1, 40:301] = True  # left padding on sample 1
    keys[:, :, 301:] = 1e3  # rows past the filled length must not count, whatever they hold
    bias = torch.where(allowed, 0.0, torch.finfo(torch.float32).min)[:, None, None].double()
    # reference: repeat each KV head for its query heads, masked softmax, one full product
    kr, vr = keys.repeat_interleave(groups, 1), values.repeat_interleave(groups, 1)
    scores = (q @ kr.transpose(2, 3)) / d**0.5
    ref = torch.softmax(scores.masked_fill(~allowed[:, None, None], float("-inf")), -1) @ vr
    # fp32 softmax and block sums inside: fp32 rounding
    torch.testing.assert_close(decode_attention(q, keys, values, bias, d**-0.5), ref, atol=1e-6, rtol=1e-5)


def _kernel_lib():
    import os

    return os.environ.get("VIDEOROPE_KERNEL_LIB")


@pytest.mark.gpu
@pytest.mark.parametrize("fast", [{}, {"compile": True}], ids=["graph", "graph+compile"])
def test_cuda_graph_decode_matches_eager_on_gpu(tiny, inputs, fast):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    rows, video = inputs
    from videorope_trt.runtime.backends.torch.backend import TorchOptions

    graphed, ref = _static_and_reference(tiny, "cuda", cuda_graph=True, kernel_lib=_kernel_lib(), **fast)
    eager = type(graphed)(ref.model, ref.info, TorchOptions(device="cuda", compile=False, cuda_graph=False))
    config = GenerationConfig(max_new_tokens=8, prefill_chunk=16, stop_at_eos=False)
    tokens = [generate(be, rows, video, config).tokens for be in (graphed, eager, ref)]
    assert tokens[0] == tokens[1] == tokens[2]
    # the same answer as the CPU model in fp32 (the tokens of the repository's reference path)
    cpu = open_backend_cpu(tiny)
    assert generate(cpu, rows, video, config).tokens == tokens[0]


@pytest.mark.gpu
def test_decode_graph_captured_after_the_prefill_leaves_its_cache_rows_alone(tiny):
    """The graph is captured at `begin_decode`, after the prefill was queued: its warm-up steps write only the
    cache's last row, never a prompt row, even with the prompt one token short of the capacity."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from videorope_trt.runtime.backends.torch.static_decoder import SPLIT

    be, _ = _static_and_reference(tiny, "cuda", cuda_graph=True)
    n = SPLIT - 1  # capacity SPLIT: the cache has no spare rows, the warm-ups write row SPLIT - 1
    ids = torch.randint(100, 400, (1, n), generator=torch.Generator().manual_seed(4)).cuda()
    pos = torch.arange(n, dtype=torch.float32, device="cuda").expand(3, 1, n).contiguous()
    be.allocate(1, SPLIT)
    be.forward(be.embed(ids), pos, torch.ones(1, n, dtype=torch.int64, device="cuda"))
    torch.cuda.synchronize()
    before = [k.clone() for k in be.fast.keys], [v.clone() for v in be.fast.values]
    assert be.graphed is None and be.fast.keys[0].shape[2] == SPLIT
    be.begin_decode(torch.ones(1, SPLIT, dtype=torch.int64, device="cuda"), torch.zeros(3, 1, 1, device="cuda"), 1.0)
    torch.cuda.synchronize()
    assert be.graphed is not None
    for old, new in zip(before[0] + before[1], be.fast.keys + be.fast.values):
        assert torch.equal(old[:, :, :n], new[:, :, :n])


def open_backend_cpu(tiny):
    from videorope_trt.runtime.backends import open_backend

    return open_backend("torch", tiny, device="cpu", reference=True)


def _rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.gpu
@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_split_prefill_on_the_gpu_stays_on_and_matches_fp32(tiny, compile):
    """Chunks after the first through the split cuDNN form (the query in the projection's layout, the merge in
    the output projection's): it is not switched off for a layout it refuses, and each chunk's logits stay
    within bf16 error of the fp32 reference, the trimmed last layer included."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from videorope_trt.runtime.backends.torch.backend import TorchBackend, TorchOptions

    ref = TorchBackend.load(tiny, TorchOptions(device="cuda", dtype="float32", reference=True))
    fast = TorchBackend.load(tiny, TorchOptions(device="cuda", dtype="bfloat16", kernel_lib=_kernel_lib(),
                                                compile=compile, split_prefill=True))
    g = torch.Generator().manual_seed(6)
    n = 200
    emb = torch.randn(1, n, fast.info.hidden_size, generator=g).cuda()
    pos = torch.arange(n, dtype=torch.float32, device="cuda").expand(3, 1, n).contiguous()
    mask = torch.ones(1, n, dtype=torch.int64, device="cuda")
    for be in (ref, fast):
        be.allocate(1, n)
    for s0, s1 in ((0, 64), (64, 128), (128, 200)):
        a = fast.forward(emb[:, s0:s1].bfloat16(), pos[:, :, s0:s1], mask[:, :s1])
        b = ref.forward(emb[:, s0:s1], pos[:, :, s0:s1], mask[:, :s1])
        assert _rel(a, b) < 3e-2, (s0, _rel(a, b))
        assert fast.fast.split_prefill, "the split form was switched off"


@pytest.mark.gpu
def test_fast_path_in_bf16_stays_within_tolerance_of_fp32(tiny, inputs):
    """bf16 graph + kernel path vs the fp32 reference model, both fed the same tokens: logits within bf16 error."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from videorope_trt.runtime.backends.torch.backend import TorchBackend, TorchOptions

    rows, video = inputs
    ref = TorchBackend.load(tiny, TorchOptions(device="cuda", dtype="float32", reference=True))
    fast = TorchBackend.load(tiny, TorchOptions(device="cuda", dtype="bfloat16", kernel_lib=_kernel_lib(),
                                                compile=False))
    assert fast.static and fast.cuda_graph
    config = GenerationConfig(max_new_tokens=8, prefill_chunk=16, stop_at_eos=False)
    want = generate(ref, rows, video, config).tokens
    got = generate(fast, rows, video, config).tokens
    # replay the reference tokens through both: per-step logits error against fp32
    for be in (ref, fast):
        be.allocate(1, 64)
    ids = torch.as_tensor([rows[0] + want[0]], device="cuda")
    emb = ref.embed(ids)
    n = ids.shape[1]
    pos = torch.arange(n, dtype=torch.float32, device="cuda").expand(3, 1, n).contiguous()
    mask = torch.ones(1, n, dtype=torch.int64, device="cuda")
    errs = []
    for s0, s1 in [(0, n - 8)] + [(i, i + 1) for i in range(n - 8, n)]:
        a = fast.forward(emb[:, s0:s1], pos[:, :, s0:s1], mask[:, :s1])
        b = ref.forward(emb[:, s0:s1], pos[:, :, s0:s1], mask[:, :s1])
        errs.append(_rel(a, b))
    assert max(errs) < 3e-2, errs
    same = sum(x == y for r, w in zip(got, want) for x, y in zip(r, w))
    assert same >= 0.5 * sum(len(w) for w in want), (got, want)


def test_fused_projections_are_views_and_change_nothing(tiny):
    from videorope_trt.runtime.backends.torch.static_decoder import fuse_projections

    fast, ref = _static_and_reference(tiny)
    fast.allocate(1, 40)  # fuses the model's projections (shared with `ref`)
    layer = ref.model.text_model.layers[0]
    a, m = layer.self_attn, layer.mlp
    qkv_w, qkv_b, gate_up = fast.fast.fused[0]
    # the separate weights are row views of the fused buffers: no second copy of the weights
    assert a.q_proj.weight.data_ptr() == qkv_w.data_ptr() and m.gate_proj.weight.data_ptr() == gate_up.data_ptr()
    assert a.v_proj.weight.untyped_storage().data_ptr() == qkv_w.untyped_storage().data_ptr()
    torch.testing.assert_close(qkv_w[: a.q_proj.out_features], a.q_proj.weight, atol=0, rtol=0)
    torch.testing.assert_close(gate_up[m.gate_proj.out_features :], m.up_proj.weight, atol=0, rtol=0)
    if qkv_b is not None:
        torch.testing.assert_close(qkv_b[-a.v_proj.out_features :], a.v_proj.bias, atol=0, rtol=0)
    # fusing again reuses the same buffers
    again = fuse_projections(ref.model.text_model.layers)
    assert again[0][0].data_ptr() == qkv_w.data_ptr() and again[0][0].shape == qkv_w.shape
    # the separate products equal the fused one's slices
    h = torch.randn(1, 5, ref.info.hidden_size, generator=torch.Generator().manual_seed(4))
    fused_out = torch.nn.functional.linear(h, qkv_w, qkv_b)
    torch.testing.assert_close(fused_out[..., a.q_proj.out_features :][..., : a.k_proj.out_features], a.k_proj(h))


def test_device_side_decode_step_matches_forward(tiny):
    """The graphed step's computation (run eagerly: token ids in, positions and mask built on the device)
    gives the logits of `forward` fed the embeddings, positions and grown mask; the default decode_step too."""
    from videorope_trt.runtime.backends.torch.decode_graph import GraphedDecode

    fast, ref = _static_and_reference(tiny)
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(100, 400, (2, 12), generator=g)
    mask = torch.ones(2, 12, dtype=torch.int64)
    mask[1, :4] = 0
    pos = torch.arange(12, dtype=torch.float32).expand(3, 2, 12).contiguous()
    offset = torch.tensor([5.0, -3.0]).view(1, 2, 1).expand(3, 2, 1).contiguous()
    full = torch.ones(2, 20, dtype=torch.int64)
    full[:, :12] = mask
    for be in (fast, ref):
        be.allocate(2, 20)
        be.forward(be.embed(ids), pos, mask)
    step = GraphedDecode(fast.fast, 2, 3, capture=False)
    step.begin(full, offset, 1.0, 12)
    ref.begin_decode(full, offset, 1.0)
    tok = torch.tensor([7, 300])
    for c in range(12, 16):
        a = step(tok)
        b = ref.decode_step(tok)
        want_pos = offset + c
        assert int(step.cache_position) == c + 1 and ref.length == c + 1
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)
        assert torch.equal(step.offset + step.step * (step.cache_position.float() - 1), want_pos)
        tok = a.argmax(-1)


