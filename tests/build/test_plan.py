"""Memory plan: parameter counts against transformers' own Qwen2-VL modules (meta device, no weights), byte counts
checked by hand, tightness of the largest context, the errors that say what would fit, and what each runtime
(TensorRT, ONNX Runtime, PyTorch) is counted as holding."""

from __future__ import annotations

import json
import math

import pytest

from videorope_trt.artifact.engine_info import MemoryPlan
from videorope_trt.artifact.model_config import PUBLISHED, ModelConfig, read_model_config
from videorope_trt.build.plan import RUNTIMES, PlanRequest, plan_memory
from videorope_trt.build.presets import PRESETS, GiB, MiB
from videorope_trt.cli import main

MODELS = {name: read_model_config(name) for name in PUBLISHED}


def _hf_config(m: ModelConfig):
    from transformers import Qwen2VLConfig

    return Qwen2VLConfig(
        text_config=dict(hidden_size=m.hidden_size, num_hidden_layers=m.num_layers, num_attention_heads=m.num_heads,
                         num_key_value_heads=m.num_kv_heads, intermediate_size=m.intermediate_size,
                         vocab_size=m.vocab_size, tie_word_embeddings=m.tie_word_embeddings,
                         max_position_embeddings=m.max_positions),
        vision_config=dict(depth=m.vision_depth, embed_dim=m.vision_dim, num_heads=m.vision_heads,
                           mlp_ratio=m.vision_mlp_ratio, hidden_size=m.hidden_size),
        tie_word_embeddings=m.tie_word_embeddings, bos_token_id=m.pad_token_id, eos_token_id=m.eos_token_ids[0])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_parameter_counts_match_transformers_modules(name):
    import torch
    from transformers import Qwen2VLForConditionalGeneration

    m = MODELS[name]
    with torch.device("meta"):
        model = Qwen2VLForConditionalGeneration(_hf_config(m))
    got = {"vision_gemm": 0, "vision_other": 0, "llm_gemm": 0, "llm_other": 0, "embed": 0, "head": 0}
    for n, p in model.named_parameters():  # named_parameters skips a tied lm_head
        key = ("embed" if "embed_tokens" in n else "head" if n.startswith("lm_head") else
               ("vision_" if ".visual." in f".{n}" else "llm_") + ("gemm" if p.ndim >= 2 else "other"))
        got[key] += p.numel()
    assert got == {"vision_gemm": m.vision_gemm_params(), "vision_other": m.vision_other_params(),
                   "llm_gemm": m.llm_gemm_params(), "llm_other": m.llm_other_params(), "embed": m.embed_params(),
                   "head": 0 if m.tie_word_embeddings else m.embed_params()}
    assert sum(p.numel() for p in model.parameters()) == m.param_count()
    assert m.param_count() == {"qwen2-vl-2b": 2_208_985_600, "qwen2-vl-7b": 8_291_375_616}[name]


def test_dims_from_both_config_layouts():
    m = MODELS["qwen2-vl-7b"]
    nested = _hf_config(m).to_dict()  # transformers 5: text fields under text_config
    assert ModelConfig.from_config(nested, name=m.name) == m
    flat = dict(nested["text_config"])  # transformers 4 / hub config.json: at the top
    flat.update(vision_config=nested["vision_config"], tie_word_embeddings=False)
    assert ModelConfig.from_config(flat, name=m.name) == m
    with pytest.raises(ValueError, match="expected a Qwen2-VL config"):
        ModelConfig.from_config({"hidden_size": 8})


def test_kv_bytes_per_token_by_hand():
    # 2 (K and V) x layers x kv_heads x head_dim x bytes
    assert MODELS["qwen2-vl-2b"].kv_bytes_per_token(2) == 2 * 28 * 2 * 128 * 2 == 28672
    assert MODELS["qwen2-vl-7b"].kv_bytes_per_token(2) == 2 * 28 * 4 * 128 * 2 == 57344
    # the cache has the graph's float type: fp32 for an fp32 graph, fp16 for fp16 and the quantized ones
    assert plan_memory("qwen2-vl-7b", "h100", PlanRequest(precision="fp32")).kv_bytes_per_token == 2 * 57344
    assert plan_memory("qwen2-vl-7b", "h100", PlanRequest(precision="int8-sq")).kv_bytes_per_token == 57344


def test_qwen2_vl_2b_int8_on_orin_nano_by_hand():
    p = plan_memory("qwen2-vl-2b", "orin-nano-8gb", PlanRequest(precision="int8-wo"))
    llm_gemm = 28 * (2 * 1536 * 1536 + 2 * 1536 * 256 + 3 * 1536 * 8960)  # q, o, k, v, gate/up/down
    llm_other = 28 * (1536 + 2 * 256 + 2 * 1536) + 1536  # q/k/v biases, two RMSNorms; final norm
    embed = 151936 * 1536
    assert p.decoder_weight_bytes == int(llm_gemm * 1 + llm_other * 2 + embed * 2)
    assert p.vision_weight_bytes == 665_271_296 * 2 and p.embedding_bytes == embed * 2
    budget = int((8 * GiB - 1792 * MiB) * 0.9)
    assert p.budget_bytes == budget
    # one 512-token chunk's activations and the logits of its last position only (the export's default)
    assert p.decoder_activation_bytes == 512 * 2 * (4 * 1536 + 2 * 256 + 3 * 8960) + 4 * 151936
    assert p.per_token_bytes == 28672 + 2 * 1536  # one K/V cache (written in place by the engine), one embeddings row
    cap = (budget - p.fixed_bytes) // p.per_token_bytes // 16 * 16
    assert p.capacity_context == min(32768, cap)
    assert (p.max_context, p.max_frames) == (4096, 24)  # the preset's budget
    assert p.total_bytes == p.fixed_bytes + p.per_token_bytes * 4096


def test_vision_activations_by_hand():
    """Qwen2-VL-7B on orin-nx-16gb (deployment.md's worked example): 4 frames per call at 448x448 are 2 slices of
    1024 patches. Per patch: the fp32 input, the fp16 block intermediates and the merged output; nothing grows with
    the square of the call's patches (attention stays inside a slice). Unfused attention adds each slice's fp16
    scores and probabilities, (slices, heads, L, L) each, as large as the engine's profiles let them be."""
    p = plan_memory("qwen2-vl-7b", "orin-nx-16gb", PlanRequest(precision="int8-wo"))
    assert (p.patches_per_chunk, p.patches_per_slice, p.tokens_per_slice) == (2048, 1024, 256)
    per_patch = 4 * 1176 + 2 * 1280 * (6 + 4) + 2 * 3584 // 4
    assert p.vision_activation_bytes == 2048 * per_patch
    # twice the frames per call: twice the activations (an (N, N) term would make it four times)
    double = plan_memory("qwen2-vl-7b", "orin-nx-16gb", PlanRequest(precision="int8-wo", frames_per_chunk=8))
    assert double.vision_activation_bytes == 2 * p.vision_activation_bytes
    # Unfused: the profiles' slice ranges are (256, 1024) (64, 256) (16, 64) (4, 16) (1024, 2048). The (256, 1024)
    # profile takes up to 2048 / 256 = 8 slices of up to 1024 patches, (1024, 2048) up to 2 of 2048: 8 · 1024² =
    # 2 · 2048² score elements per head, fp16, scores and probabilities, 16 heads.
    unfused = plan_memory("qwen2-vl-7b", "orin-nx-16gb", PlanRequest(precision="int8-wo", fused_attention=False))
    assert unfused.vision_activation_bytes == 2048 * per_patch + 2 * (8 * 1024 * 1024) * 16 * 2


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("target", sorted(PRESETS))
def test_largest_context_is_tight(model, target):
    for precision in PRESETS[target].precisions:
        try:
            p = plan_memory(model, target, PlanRequest(precision=precision))
        except ValueError as e:
            assert "does not fit" in str(e)
            continue
        assert p.fixed_bytes + p.per_token_bytes * p.capacity_context <= p.budget_bytes
        if p.capacity_context < MODELS[model].max_positions:
            assert p.fixed_bytes + p.per_token_bytes * (p.capacity_context + 16) > p.budget_bytes
        assert p.max_context <= p.capacity_context and p.total_bytes <= p.budget_bytes
        assert p.max_frames <= p.capacity_frames


def test_frames_set_the_context_and_errors_say_what_fits():
    p = plan_memory("qwen2-vl-2b", "orin-nx-16gb", PlanRequest(max_frames=100))
    assert p.max_frames == 100 and p.max_context == 16384  # the preset's context already holds 50*256+512
    p = plan_memory("qwen2-vl-2b", "orin-nx-16gb", PlanRequest(max_frames=200))
    assert p.max_context == math.ceil((100 * 256 + 512) / 16) * 16 == 26112
    with pytest.raises(ValueError,
                       match=r"1000 frames need a context of 128512 tokens .*the most that fits is a context of 32768"):
        plan_memory("qwen2-vl-2b", "orin-nx-16gb", PlanRequest(max_frames=1000))
    with pytest.raises(ValueError, match="multiple of temporal_patch_size=2"):
        plan_memory("qwen2-vl-2b", "h100", PlanRequest(frames_per_chunk=3))


def test_precision_errors():
    with pytest.raises(ValueError,
                       match=r"does not support precision 'fp8' \(no FP8 tensor cores on compute capability 8.7\)"):
        plan_memory("qwen2-vl-2b", "agx-orin-64gb", PlanRequest(precision="fp8"))
    with pytest.raises(ValueError, match="rtx does not support precision 'int8-sq'"):
        plan_memory("qwen2-vl-2b", "rtx", PlanRequest(precision="int8-sq"))
    with pytest.raises(ValueError, match="unknown precision 'int3'"):
        plan_memory("qwen2-vl-2b", "h100", PlanRequest(precision="int3"))
    with pytest.raises(ValueError, match="unknown target 'orin'"):
        plan_memory("qwen2-vl-2b", "orin")


def test_does_not_fit_names_the_precisions_that_do():
    with pytest.raises(ValueError,
                       match=r"qwen2-vl-2b fp16 .* does not fit.*int8-wo holds \d+ tokens, int8-sq holds \d+ tokens"):
        plan_memory("qwen2-vl-2b", "orin-nano-8gb")
    with pytest.raises(ValueError, match="no precision of this target holds the model"):
        plan_memory("qwen2-vl-7b", "orin-nano-8gb")


def test_json_round_trip_and_table():
    p = plan_memory("qwen2-vl-7b", "thor", PlanRequest(precision="fp8"))
    d = json.loads(json.dumps(p.to_dict()))
    assert MemoryPlan.from_dict(d) == p and d["kv_cache_bytes"] == p.max_context * 57344  # one cache
    text = p.table()
    assert "largest context / frames" in text and f"{p.capacity_context} tokens" in text


def test_checkpoint_directory_and_cli(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(_hf_config(MODELS["qwen2-vl-2b"]).to_dict()))
    want = plan_memory(MODELS["qwen2-vl-2b"], "orin-nano-8gb", PlanRequest(precision="int8-wo"))
    assert main(["plan", str(tmp_path), "--target", "orin-nano-8gb", "--precision", "int8-wo", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["capacity_context"] == want.capacity_context and got["total_bytes"] == want.total_bytes
    assert main(["plan", "qwen2-vl-2b", "--target", "agx-orin-64gb", "--precision", "fp8"]) == 2
    assert "does not support precision 'fp8'" in capsys.readouterr().err
    assert main(["plan", str(tmp_path / "missing"), "--target", "h100"]) == 2


def _plans(model, target, **kw) -> dict:
    return {rt: plan_memory(model, target, PlanRequest(runtime=rt, **kw)) for rt in sorted(RUNTIMES)}


def test_torch_runtime_shares_a_tied_head_and_onnxruntime_keeps_two_caches():
    plans = _plans("qwen2-vl-2b", "orin-nx-16gb", precision="fp16", batch=2)
    trt, torch_, ort = plans["tensorrt"], plans["torch"], plans["onnxruntime"]
    head = 151936 * 1536 * 2  # the tied lm_head in fp16: one copy fewer under PyTorch
    chunk = 1024  # orin-nx-16gb's prefill chunk
    kv = 2 * 28672  # one cache's bytes per token, for a batch of 2
    assert trt.prefill_chunk == torch_.prefill_chunk == chunk and trt.max_context == torch_.max_context == 16384
    assert trt.decoder_weight_bytes - torch_.decoder_weight_bytes == head
    assert trt.decoder_activation_bytes == torch_.decoder_activation_bytes  # last-position logits in both
    assert trt.fixed_bytes - torch_.fixed_bytes == head
    assert (trt.kv_copies, torch_.kv_copies, ort.kv_copies) == (1, 1, 2)
    assert trt.per_token_bytes == torch_.per_token_bytes and ort.per_token_bytes - trt.per_token_bytes == kv
    assert trt.kv_cache_bytes == torch_.kv_cache_bytes == kv * 16384  # 16384 rows: whole splits for torch too
    assert ort.kv_cache_bytes == 2 * kv * ort.max_context  # the caches a call reads and the ones it returns
    assert trt.total_bytes - torch_.total_bytes == head
    assert (trt.runtime, torch_.runtime) == ("tensorrt", "torch")
    # ONNX Runtime runs the same decoder graph as TensorRT: the same weights and activations
    assert (ort.decoder_weight_bytes, ort.decoder_activation_bytes) == (trt.decoder_weight_bytes,
                                                                        trt.decoder_activation_bytes)
    # a graph exported with every position's logits: fp32 logits of every position but the last, batch of 2
    full = plan_memory("qwen2-vl-2b", "orin-nx-16gb", PlanRequest(precision="fp16", batch=2, all_logits=True))
    assert full.decoder_activation_bytes - trt.decoder_activation_bytes == 2 * (chunk - 1) * 151936 * 4
    full_torch = plan_memory("qwen2-vl-2b", "orin-nx-16gb",
                             PlanRequest(precision="fp16", batch=2, all_logits=True, runtime="torch"))
    assert full_torch == torch_  # PyTorch never makes them


def test_untied_head_is_counted_by_every_runtime():
    plans = _plans("qwen2-vl-7b", "agx-orin-64gb", precision="int8-wo")
    trt, torch_ = plans["tensorrt"], plans["torch"]
    assert not MODELS["qwen2-vl-7b"].tie_word_embeddings
    assert trt.decoder_weight_bytes == torch_.decoder_weight_bytes  # lm_head 152064 x 3584 x 2 B in both
    gemm = 28 * (2 * 3584 * 3584 + 2 * 3584 * 512 + 3 * 3584 * 18944)
    other = 28 * (3584 + 2 * 512 + 2 * 3584) + 3584
    assert torch_.decoder_weight_bytes == gemm * 1 + other * 2 + 152064 * 3584 * 2
    assert trt.decoder_activation_bytes == torch_.decoder_activation_bytes  # last-position logits in both
    # the smaller fixed cost leaves the torch plan at least as much context
    assert torch_.capacity_context >= trt.capacity_context


def test_default_runtime_is_tensorrt_and_old_plans_read_back():
    assert PlanRequest().runtime == "tensorrt"
    p = plan_memory("qwen2-vl-2b", "orin-nx-16gb", PlanRequest(runtime="torch"))
    d = json.loads(json.dumps(p.to_dict()))
    assert d["runtime"] == "torch" and MemoryPlan.from_dict(d) == p
    old = plan_memory("qwen2-vl-2b", "orin-nx-16gb").to_dict()
    del old["runtime"]  # engine.json written before runtimes were told apart
    back = MemoryPlan.from_dict(old)
    assert back.runtime == "tensorrt" and back == plan_memory("qwen2-vl-2b", "orin-nx-16gb")
    del old["max_context"]
    with pytest.raises(ValueError, match=r"missing fields \['max_context'\]"):
        MemoryPlan.from_dict(old)


def test_unknown_runtime_names_the_known_ones():
    with pytest.raises(ValueError,
                       match=r"unknown runtime 'tflite'; expected one of \['onnxruntime', 'tensorrt', 'torch'\]"):
        plan_memory("qwen2-vl-2b", "h100", PlanRequest(runtime="tflite"))


def test_cli_runtime_flag(capsys):
    args = ["plan", "qwen2-vl-2b", "--target", "orin-nx-16gb", "--precision", "fp16", "--json"]
    for runtime in ("tensorrt", "torch"):
        want = plan_memory("qwen2-vl-2b", "orin-nx-16gb", PlanRequest(precision="fp16", runtime=runtime))
        assert main(args + ["--runtime", runtime]) == 0
        got = json.loads(capsys.readouterr().out)
        assert got["runtime"] == runtime and got["total_bytes"] == want.total_bytes
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["runtime"] == "tensorrt"
    assert main(args[:-1] + ["--runtime", "torch"]) == 0
    assert "(torch runtime)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(args + ["--runtime", "tflite"])
    assert "invalid choice: 'tflite'" in capsys.readouterr().err


def test_cli_frame_size_is_width_by_height(capsys):
    """`--frame-size 448x224` is 448 wide and 224 high, as make-video's `--size` reads it: 16 x 8 merged tokens."""
    assert main(["plan", "qwen2-vl-2b", "--target", "orin-nx-16gb", "--frame-size", "448x224", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["frame_size"] == [224, 448] and got["tokens_per_slice"] == 16 * 8
    with pytest.raises(SystemExit):
        main(["plan", "qwen2-vl-2b", "--target", "orin-nx-16gb", "--frame-size", "448by224"])
    assert "expected WIDTHxHEIGHT in pixels such as 448x448, got '448by224'" in capsys.readouterr().err


@pytest.mark.parametrize("flag,value,message", [
    ("--headroom", "-1", r"headroom -1.0: expected a fraction of usable memory in \[0, 1\)"),
    ("--headroom", "1", r"headroom 1.0: expected a fraction"),
    ("--prefill-chunk", "-8", "prefill-chunk -8: expected a whole number >= 1"),
    ("--max-context", "0", "max-context 0: expected a whole number >= 1"),
    ("--frames-per-chunk", "0", "frames-per-chunk 0: expected a whole number >= 1"),
    ("--batch", "0", "batch 0: expected a whole number >= 1"),
    ("--max-frames", "-2", "max-frames -2: expected a whole number >= 0"),
])
def test_requests_that_plan_nothing_real_are_refused(capsys, flag, value, message):
    """A budget larger than the device (negative headroom), a negative chunk or an empty context used to give a
    plan that looked fine."""
    import re

    assert main(["plan", "qwen2-vl-2b", "--target", "h100", flag, value]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and err.count("\n") == 1, err


def test_a_context_too_short_for_one_frame_is_planned_with_a_warning(capsys):
    assert main(["plan", "qwen2-vl-2b", "--target", "h100", "--max-context", "600", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["max_frames"] == 0
    assert "warning: a context of 600 tokens holds no video frame" in err and "at least 768" in err
    assert main(["plan", "qwen2-vl-2b", "--target", "h100", "--max-context", "768", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["max_frames"] == 2 and err == ""
