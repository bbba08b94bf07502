"""Engine builder: profiles from the plan, target checks, engine.json checks, and real TensorRT-RTX ahead-of-time
builds of small ONNX graphs with the decoder's and vision encoder's kinds of dynamic inputs."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from videorope_trt import trt as T
from videorope_trt.artifact import engine_info as EI
from videorope_trt.artifact.manifest import FORMAT_VERSION, KIND
from videorope_trt.artifact.model_config import ModelConfig
from videorope_trt.build import engine as B
from videorope_trt.build.plan import PlanRequest, plan_memory

H, KV, D, V, E = 32, 2, 8, 48, 16  # hidden, kv heads, head dim, vocab, vision width
CONFIG = {  # a tiny Qwen2-VL config.json: the plan reads it from the manifest
    "hidden_size": H, "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": KV,
    "intermediate_size": 64, "vocab_size": V, "max_position_embeddings": 4096, "tie_word_embeddings": True,
    "vision_config": {"depth": 1, "embed_dim": E, "num_heads": 2, "mlp_ratio": 2, "hidden_size": H},
}
MODELS_TINY = ModelConfig.from_config(CONFIG, name="tiny")
needs_rtx = pytest.mark.skipif(not T.available("rtx"),
                               reason="TensorRT-RTX wheels not installed (requirements/rtx.txt)")


def _decoder(dtype) -> onnx.ModelProto:
    """logits = embeds @ W + sum(positions) * mask_sum; each cache out = its cache + a sum of the new keys (the
    decoder's inputs and outputs, in standard ops)."""
    np_t = np.float16 if dtype == TensorProto.FLOAT16 else np.float32
    vi = helper.make_tensor_value_info
    cache = ["batch", KV, "capacity", D]
    inputs = [vi("inputs_embeds", dtype, ["batch", "seq", H]), vi("positions", TensorProto.FLOAT, [3, "batch", "seq"]),
              vi("attention_mask", TensorProto.INT64, ["batch", "total"]),
              vi("write_offset", TensorProto.INT32, ["batch"]),
              vi("key_cache_0", dtype, cache), vi("value_cache_0", dtype, cache)]
    outputs = [vi("logits", dtype, ["batch", "seq", V]), vi("key_cache_0_out", dtype, cache),
               vi("value_cache_0_out", dtype, cache)]
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((H, V)).astype(np_t), "W"),
             numpy_helper.from_array(rng.standard_normal((H, KV * D)).astype(np_t), "Wk"),
             numpy_helper.from_array(np.array([0, 0, KV, D], np.int64), "shape"),
             numpy_helper.from_array(np.array([2], np.int64), "two"),
             numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes")]
    n = helper.make_node
    nodes = [n("MatMul", ["inputs_embeds", "W"], ["mm"]),
             n("ReduceSum", ["positions"], ["psum"], keepdims=0),
             n("ReduceSum", ["attention_mask"], ["msum"], keepdims=0),
             n("Cast", ["msum"], ["mcast"], to=TensorProto.FLOAT), n("Mul", ["psum", "mcast"], ["pm"]),
             n("Cast", ["pm"], ["pmc"], to=dtype), n("Add", ["mm", "pmc"], ["logits"]),
             n("MatMul", ["inputs_embeds", "Wk"], ["k"]), n("Reshape", ["k", "shape"], ["k4"]),
             n("Transpose", ["k4"], ["kt"], perm=[0, 2, 1, 3]),
             n("ReduceSum", ["kt", "two"], ["ks"], keepdims=1),
             n("Cast", ["write_offset"], ["off"], to=dtype), n("Unsqueeze", ["off", "axes"], ["off4"]),
             n("Add", ["ks", "off4"], ["ko"]),
             n("Add", ["key_cache_0", "ko"], ["key_cache_0_out"]),
             n("Add", ["value_cache_0", "ko"], ["value_cache_0_out"])]
    return _model(nodes, inputs, outputs, inits)


def _vision(dtype) -> onnx.ModelProto:
    """The vision graph's inputs and their shapes' use: patches viewed as slices of one slice's length,
    merged (num_patches/4, H) = reshape(reshape(patches @ Wp, (-1, L, E)) + sum of each slice id, (-1, 4E)) @ Wm."""
    np_t = np.float16 if dtype == TensorProto.FLOAT16 else np.float32
    vi = helper.make_tensor_value_info
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.standard_normal((1176, E)).astype(np_t), "Wp"),
             numpy_helper.from_array(rng.standard_normal((4 * E, H)).astype(np_t), "Wm"),
             numpy_helper.from_array(np.array([-1, 4 * E], np.int64), "shape"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus_one"),
             numpy_helper.from_array(np.array([E], np.int64), "width"),
             numpy_helper.from_array(np.array([1], np.int64), "one")]
    n = helper.make_node
    nodes = [n("MatMul", ["pixel_values", "Wp"], ["p"]),
             n("Shape", ["slice_pos_ids"], ["ids_shape"], end=1),
             n("Concat", ["minus_one", "ids_shape", "width"], ["slices_shape"], axis=0),
             n("Reshape", ["p", "slices_shape"], ["slices"]),
             n("Cast", ["slice_pos_ids"], ["ids"], to=dtype),
             n("ReduceSum", ["ids", "one"], ["id_sum"], keepdims=1),
             n("Add", ["slices", "id_sum"], ["placed"]),
             n("Reshape", ["placed", "shape"], ["r"]),
             n("MatMul", ["r", "Wm"], ["merged"])]
    inputs = [vi("pixel_values", dtype, ["num_patches", 1176]),
              vi("slice_pos_ids", TensorProto.INT64, ["slice_len", 2])]
    return _model(nodes, inputs, [vi("merged", dtype, ["merged_tokens", H])], inits)


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def _artifact(tmp_path, dtype=TensorProto.FLOAT16, precision="fp16"):
    onnx.save(_decoder(dtype), str(tmp_path / "decoder.onnx"))
    onnx.save(_vision(dtype), str(tmp_path / "vision.onnx"))
    graphs = {g: {"file": f"{g}.onnx", "precision": precision} for g in ("decoder", "vision")}
    (tmp_path / "manifest.json").write_text(json.dumps({"kind": KIND, "format_version": FORMAT_VERSION,
                                                            "model": {"name": "tiny", "config": CONFIG},
                                                            "graphs": graphs}))
    return tmp_path


def test_profiles_follow_the_plan(tmp_path):
    _artifact(tmp_path)
    plan = plan_memory(B.manifest_model(B.read_manifest(tmp_path)), "rtx",
                       PlanRequest(max_context=1024, prefill_chunk=256))
    profiles = dict(B.profile_shapes(B.onnx_inputs(tmp_path / "decoder.onnx"), "decoder", plan))
    pre, dec = profiles["prefill"], profiles["decode"]
    assert pre["inputs_embeds"] == ((1, 1, H), (1, 256, H), (1, 256, H))
    assert pre["positions"] == ((3, 1, 1), (3, 1, 256), (3, 1, 256))
    assert pre["key_cache_0"] == ((1, KV, 1, D), (1, KV, 1024, D), (1, KV, 1024, D))
    assert pre["write_offset"] == ((1,), (1,), (1,))
    assert pre["attention_mask"] == ((1, 1), (1, 256), (1, 1024))
    assert dec["inputs_embeds"] == ((1, 1, H),) * 3
    assert dec["value_cache_0"] == ((1, KV, 1, D), (1, KV, 1024, D), (1, KV, 1024, D))
    assert dec["attention_mask"] == ((1, 1), (1, 513), (1, 1024))
    vision = B.profile_shapes(B.onnx_inputs(tmp_path / "vision.onnx"), "vision", plan)
    n = plan.patches_per_chunk  # 8 frames at 448x448: 4 slices x 256 tokens x 4 patches
    assert n == 8 // 2 * 256 * 4 and plan.patches_per_slice == 256 * 4
    # whole slices of one grid, from one merge block up to the chunk, in ranges of slice lengths: the planned
    # frames' range first, tuned for their slices
    assert [name for name, _ in vision] == ["vision:256-1024", "vision:64-256", "vision:16-64", "vision:4-16",
                                            "vision:1024-2048", "vision:2048-4096"]
    first = vision[0][1]
    assert first["pixel_values"] == ((256, 1176), (n, 1176), (n, 1176))
    assert first["slice_pos_ids"] == ((256, 2), (1024, 2), (1024, 2))
    assert vision[3][1]["slice_pos_ids"] == ((4, 2), (16, 2), (16, 2)) and vision[3][1]["pixel_values"][0] == (4, 1176)
    assert vision[5][1]["slice_pos_ids"] == ((2048, 2), (4096, 2), (4096, 2))


def test_vision_profiles_bound_each_profiles_slices():
    """TensorRT sizes a profile for its most slices (most patches over its shortest slice) of its longest slice:
    each range of slice lengths spans at most SLICE_RATIOS (below and above the planned slice), and the ranges
    cover one merge block to the chunk."""
    from videorope_trt.build.plan import SLICE_RATIOS

    for shortest, planned, longest in ((4, 1024, 1024), (4, 1024, 8192), (4, 36, 144), (4, 4, 4), (4, 64, 64),
                                       (4, 1196, 3588), (4, 1196, 4784)):
        ranges = B.slice_ranges(shortest, planned, longest)
        assert ranges[0][1] == planned or ranges == [(planned, planned)]
        assert all(hi <= SLICE_RATIOS[hi > planned] * lo and lo % shortest == 0 for lo, hi in ranges)
        covered = sorted(ranges)
        assert covered[0][0] == shortest and covered[-1][1] == longest
        assert all(a[1] == b[0] for a, b in zip(covered, covered[1:]))  # no gap


@pytest.mark.parametrize("frame_size", [(448, 448), (360, 640), (252, 336)], ids=lambda v: "x".join(map(str, v)))
@pytest.mark.parametrize("frames_per_chunk", [2, 6, 8, 12])
def test_vision_profiles_are_whole_slices_at_every_point(frame_size, frames_per_chunk):
    """The graph views a call's patches as (slices, L): at a profile's min and opt points the patches are whole
    slices of the slice length (TensorRT refuses the build otherwise: "reshape would change volume"), every slice
    length is whole merge blocks, and no point exceeds the chunk."""
    plan = plan_memory("qwen2-vl-2b", "h100", PlanRequest(frame_size=frame_size, frames_per_chunk=frames_per_chunk))
    n, m2 = plan.patches_per_chunk, 4
    for name, r in B.GRAPH_PROFILES["vision"](plan):
        (pmin, popt, pmax), (smin, sopt, smax) = r["patches"], r["slice"]
        assert pmin % smin == 0 and popt % sopt == 0 and popt > 0, (name, r)
        assert all(v % m2 == 0 for v in (smin, sopt, smax)) and smin <= sopt <= smax <= pmax == n, (name, r)
        assert r["merged"] == (pmin // m2, popt // m2, pmax // m2)


def test_unknown_symbolic_dim_is_named(tmp_path):
    plan = plan_memory("qwen2-vl-2b", "h100")
    with pytest.raises(ValueError, match="symbolic dim 'frobs' has no known role"):
        B.profile_shapes([{"name": "x", "shape": ["frobs", 4]}], "decoder", plan)


def test_fp8_graph_on_orin_is_refused_before_any_build(tmp_path):
    _artifact(tmp_path, precision="fp8")
    with pytest.raises(ValueError, match=r"orin-nano-8gb does not support precision 'fp8' \(no FP8"):
        B.build_engines(tmp_path, B.BuildRequest("orin-nano-8gb"))


def test_context_that_does_not_fit_says_what_fits(tmp_path):
    # The tiny model's max_position_embeddings (4096) caps its context on any target.
    with pytest.raises(ValueError,
                       match="context of 8192 tokens does not fit; the most that fits is a context of 4096 tokens"):
        B.build_engines(_artifact(tmp_path), B.BuildRequest("rtx", PlanRequest(max_context=8192)))


def test_a_plan_for_another_runtime_is_refused(tmp_path):
    with pytest.raises(ValueError, match="must be for the tensorrt runtime .*got runtime='torch'"):
        B.build_engines(_artifact(tmp_path), B.BuildRequest("rtx", PlanRequest(runtime="torch")))


def test_full_tensorrt_missing_names_the_package():
    if T.available("tensorrt"):
        pytest.skip("full TensorRT is installed here")
    with pytest.raises(T.TensorRTMissing, match="tensorrt is not installed.*pip install tensorrt-cu13"):
        T.import_trt("tensorrt")


def test_version_matching():
    assert T.version_matches("10.3.0.30", ("10.3", "10.16"))
    assert T.version_matches("11.4.0.106", ("11",))
    assert not T.version_matches("10.13.3.9", ("10.1",))  # a prefix of components, not of characters
    assert not T.version_matches("10.3.0", ("11",))


@needs_rtx
@pytest.mark.rtx
@pytest.mark.parametrize("dtype,precision", [(TensorProto.FLOAT, "fp32"), (TensorProto.FLOAT16, "fp16")])
def test_rtx_builds_engines_and_engine_json(tmp_path, dtype, precision):
    art = _artifact(tmp_path, dtype, precision)
    request = B.BuildRequest("rtx", PlanRequest(precision=precision, max_context=2048, prefill_chunk=128,
                                                frames_per_chunk=2))
    info = B.build_engines(art, request)
    out = art / "engines" / "rtx"
    on_disk = json.loads((out / "engine.json").read_text())
    assert on_disk == json.loads(json.dumps(info))
    trt = T.import_trt("rtx")
    assert on_disk["flavour"] == "rtx" and on_disk["tensorrt_version"] == trt.__version__
    assert on_disk["compute_capabilities"] == ["8.0", "8.6", "8.9", "12.0"] and on_disk["precision"] == precision
    assert on_disk["plugin_library"] is None and on_disk["timing_cache"] is None
    for graph in ("decoder", "vision"):
        entry = on_disk["engines"][graph]
        assert (out / entry["file"]).stat().st_size == entry["bytes"] > 1000
        assert entry["onnx_sha256"] == EI.sha256(art / f"{graph}.onnx")
    pre = on_disk["engines"]["decoder"]["profiles"][0]
    assert pre["name"] == "prefill"
    assert pre["shapes"]["key_cache_0"] == [[1, KV, 1, D], [1, KV, 2048, D], [1, KV, 2048, D]]
    assert EI.engine_plan(out).max_context == 2048 and not list(out.glob("*.tmp*"))


def _engine_dir(tmp_path, **over):
    info = {"format_version": EI.ENGINE_FORMAT, "target": "orin-nx-16gb", "flavour": "tensorrt",
            "tensorrt_version": "10.3.0.30", "compute_capabilities": ["8.7"], "plan": {},
            "plugin_library": {"path": "/x/libvideorope_trt_plugins.so", "sha256": "0" * 64}, **over}
    (tmp_path / "engine.json").write_text(json.dumps(info))
    return tmp_path


def test_engine_dir_checks_say_what_mismatched(tmp_path):
    d = _engine_dir(tmp_path)
    orin = {"name": "Orin", "compute_capability": "8.7"}
    assert EI.check_engine_dir(d, running_version="10.3.0.30", gpu=orin)["target"] == "orin-nx-16gb"
    with pytest.raises(EI.EngineMismatch, match="built with tensorrt 10.3.0.30, this machine runs 11.4.0.106"):
        EI.check_engine_dir(d, running_version="11.4.0.106", gpu=orin)
    with pytest.raises(EI.EngineMismatch,
                       match=r"compute capability 8.7 \(target orin-nx-16gb\), this GPU \(H200\) is 9.0"):
        EI.check_engine_dir(d, running_version="10.3.0.30", gpu={"name": "H200", "compute_capability": "9.0"})
    with pytest.raises(EI.EngineMismatch, match="has no CUDA GPU"):
        EI.check_engine_dir(d, running_version="10.3.0.30", gpu=None)
    lib = tmp_path / "lib.so"
    lib.write_bytes(b"not the same library")
    with pytest.raises(EI.EngineMismatch, match="plugin library .*lib.so differs"):
        EI.check_engine_dir(d, running_version="10.3.0.30", gpu=orin, plugin_library=lib)
    _engine_dir(tmp_path, format_version=99)
    with pytest.raises(EI.EngineMismatch, match="format_version 99"):
        EI.check_engine_dir(d, running_version="10.3.0.30", gpu=orin)


def test_every_symbolic_dim_of_the_export_specs_has_a_range():
    from dataclasses import replace

    from videorope_trt.artifact import specs
    model = replace(MODELS_TINY, num_layers=2)
    plan = plan_memory(MODELS_TINY, "h100", PlanRequest(max_context=1024, prefill_chunk=128))
    for graph, spec in specs.graph_specs(model, num_axes=4).items():
        inputs = spec.to_json()["inputs"]
        for name, shapes in B.profile_shapes(inputs, graph, plan):
            assert set(shapes) == {t["name"] for t in inputs if any(isinstance(d, str) for d in t["shape"])}
            if graph == "decoder":
                assert shapes["positions"][2] == (4, 1, 128 if name == "prefill" else 1)
                assert shapes["key_cache_1"][2] == (1, KV, 1024, D)
            else:
                assert shapes["pixel_values"][2] == (plan.patches_per_chunk, model.patch_dim)
                lo, hi = (int(v) for v in name.split(":")[1].split("-"))
                assert shapes["slice_pos_ids"][0] == (lo, 2) and shapes["slice_pos_ids"][2] == (hi, 2)


def _rope_decoder(path) -> None:
    """A graph whose one node is VideoRope, with the decoder's symbolic dims."""
    from videorope_trt.rope.contract import ONNX_DOMAIN, RotaryAttrs

    vi = helper.make_tensor_value_info
    inputs = [vi("x", TensorProto.FLOAT16, ["batch", KV, "seq", D]),
              vi("positions", TensorProto.FLOAT, [3, "batch", "seq"])]
    inits = [numpy_helper.from_array(np.float32([1, 0.1, 0.01, 0.001]), "inv_freq"),
             numpy_helper.from_array(np.int32([0, 1, 2, 0]), "axis_map")]
    node = helper.make_node("VideoRope", ["x", "positions", "inv_freq", "axis_map"], ["y"], domain=ONNX_DOMAIN,
                            **RotaryAttrs().onnx_attributes())
    graph = helper.make_graph([node], "g", inputs, [vi("y", TensorProto.FLOAT16, ["batch", KV, "seq", D])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(ONNX_DOMAIN, 1)])
    model.ir_version = 9
    onnx.save(model, str(path))


@needs_rtx
@pytest.mark.rtx
@pytest.mark.nvcc
def test_rtx_build_loads_the_plugin_library_for_videorope_nodes(tmp_path, plugin_library):
    import shutil
    from pathlib import Path

    _artifact(tmp_path)
    _rope_decoder(tmp_path / "decoder.onnx")
    request = B.BuildRequest("rtx", PlanRequest(max_context=512, prefill_chunk=64), graphs=("decoder",))
    with pytest.raises(FileNotFoundError, match="VideoRope nodes, which need the plugin library"):
        B.build_engines(tmp_path, request)
    (tmp_path / "plugins").mkdir()
    lib = Path(shutil.copy(plugin_library, tmp_path / "plugins"))  # where build looks for it by default
    info = B.build_engines(tmp_path, request)
    assert info["plugin_library"]["sha256"] == EI.sha256(lib) and Path(info["plugin_library"]["path"]) == lib.resolve()
    assert info["engines"]["decoder"]["bytes"] > 1000


# -- what the TensorRT backend runs: exactly the engines engine.json lists, built from the graphs now there --------

def _listed(*graphs, onnx_sha="0" * 64):
    return {"target": "rtx", "engines": {g: {"file": f"{g}.engine", "onnx": f"{g}.onnx", "onnx_sha256": onnx_sha}
                                         for g in graphs}}


def test_the_engines_run_are_those_engine_json_lists(tmp_path):
    """A build of `vision decoder.int8-sq` used to be run as decoder.engine: a stale fp16 engine beside it, or
    nothing, while engine.json said int8-sq."""
    (tmp_path / "decoder.engine").write_bytes(b"a stale fp16 engine from an earlier build")
    info = _listed("vision", "decoder.int8-sq")
    assert EI.select_engines(info, tmp_path) == {"vision": "vision", "decoder": "decoder.int8-sq"}
    assert EI.select_engines(info, tmp_path, "decoder.int8-sq")["decoder"] == "decoder.int8-sq"
    with pytest.raises(ValueError, match="no 'decoder' engine; engine.json lists vision, decoder.int8-sq"):
        EI.select_engines(info, tmp_path, "decoder")
    both = _listed("vision", "decoder", "decoder.int8-sq")
    with pytest.raises(ValueError, match=r"lists 2 decoder engines \(decoder, decoder.int8-sq\); name the one to run"):
        EI.select_engines(both, tmp_path)
    assert EI.select_engines(both, tmp_path, "decoder")["decoder"] == "decoder"
    with pytest.raises(ValueError, match=r"lists 0 vision engines \(none\)"):
        EI.select_engines(_listed("decoder"), tmp_path)


def test_an_engine_built_from_another_graph_is_refused(tmp_path):
    """engine.json's ONNX sha256 is compared with the graph now in the artifact (exported again since the build)."""
    art, engines = tmp_path / "art", tmp_path / "art" / "engines" / "rtx"
    engines.mkdir(parents=True)
    (art / "decoder.onnx").write_bytes(b"the graph the engine was built from")
    info = _listed("decoder", onnx_sha=EI.sha256(art / "decoder.onnx"))
    EI.check_engine_sources(info, engines, art, ["decoder"])
    (art / "decoder.onnx").write_bytes(b"a graph exported since")
    with pytest.raises(EI.EngineMismatch, match=r"decoder.engine was built from another decoder.onnx than the one in "
                                                r".*exported again since\?\); rebuild with `videorope-trt build"):
        EI.check_engine_sources(info, engines, art, ["decoder"])
    (art / "decoder.onnx").unlink()
    with pytest.raises(EI.EngineMismatch, match="built from another decoder.onnx"):
        EI.check_engine_sources(info, engines, art, ["decoder"])


@needs_rtx
@pytest.mark.rtx
def test_rtx_builds_the_vision_engine_for_a_wide_frame_and_an_uneven_chunk(tmp_path):
    """360x640 frames (26 x 46 patches a slice) and 6 frames a call (3 slices): no slice range of the profiles
    divides the chunk, and every profile still builds."""
    art = _artifact(tmp_path)
    request = B.BuildRequest("rtx", PlanRequest(max_context=2048, prefill_chunk=128, frames_per_chunk=6,
                                                frame_size=(360, 640)), graphs=("vision",))
    info = B.build_engines(art, request)
    names = [p["name"] for p in info["engines"]["vision"]["profiles"]]
    assert names[0] == "vision:300-1196" and len(names) == 7


@needs_rtx
@pytest.mark.rtx
def test_a_failed_build_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    """The build fails on its second graph: engines/<target> is the earlier build's, file for file, and no temporary
    folder is left (it used to leave a new vision.engine beside the old decoder.engine and engine.json)."""
    art = _artifact(tmp_path)
    request = B.BuildRequest("rtx", PlanRequest(max_context=512, prefill_chunk=64, frames_per_chunk=2))
    B.build_engines(art, request)
    out = art / "engines" / "rtx"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = B.build_engine

    def failing(trt, onnx_path, *args, **kwargs):
        if onnx_path.name == "decoder.onnx":
            raise RuntimeError("TensorRT failed to build decoder.onnx")
        return real(trt, onnx_path, *args, **kwargs)

    monkeypatch.setattr(B, "build_engine", failing)
    with pytest.raises(RuntimeError, match="failed to build"):
        B.build_engines(art, B.BuildRequest("rtx", PlanRequest(max_context=1024, prefill_chunk=64, frames_per_chunk=2),
                                            graphs=("vision", "decoder")))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in (art / "engines").iterdir()) == ["rtx"]


def test_a_missing_weights_file_is_named_before_any_build(tmp_path, capsys):
    """A graph whose external data file is gone: `build` names the file (a TensorRT parse error named neither)."""
    from onnx.external_data_helper import convert_model_to_external_data

    from videorope_trt.cli import main

    art = _artifact(tmp_path)
    model = onnx.load(str(art / "decoder.onnx"))
    convert_model_to_external_data(model, location="decoder.onnx.data", size_threshold=0)
    onnx.save(model, str(art / "decoder.onnx"))
    (art / "decoder.onnx.data").unlink()
    assert main(["build", str(art), "--target", "rtx", "--max-context", "512", "--prefill-chunk", "64"]) == 2
    err = capsys.readouterr().err
    assert f"{art}: decoder.onnx.data, the weights of the decoder graph decoder.onnx, is missing" in err
    assert not (art / "engines").exists()


@needs_rtx
@pytest.mark.rtx
def test_tensorrt_log_leaves_out_what_says_nothing_to_a_user(capsys):
    trt = T.import_trt("rtx")
    logger = T.make_logger(trt)
    W = trt.ILogger.WARNING
    logger.log(W, "ImporterContext.hpp:501: A node named n0 already exists, the output tensors of this new instance "
                  "will not be queryable.")
    logger.log(W, "ModelImporter.cpp:1071: Make sure input attention_mask has Int64 binding.")
    logger.log(trt.ILogger.INFO, "an info line")
    assert capsys.readouterr().err == ""
    logger.log(W, "Profile kMAX values are not self-consistent.")
    logger.log(trt.ILogger.ERROR, "parse error")
    assert capsys.readouterr().err == "[TRT] [W] Profile kMAX values are not self-consistent.\n[TRT] [E] parse error\n"
