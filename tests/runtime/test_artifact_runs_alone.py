"""An artifact directory runs on its own: copied elsewhere, its checkpoint moved away, `run` on ONNX Runtime gives
the answer it gave in place (and PyTorch's on the checkpoint); and the memory plan counts what each backend
allocates (its KV caches and its logits), byte for byte."""

import shutil

import pytest
import torch

from videorope_trt.cli import main


@pytest.fixture(scope="module")
def moved(tiny_ckpt, tmp_path_factory):
    """(artifact copied to a new place, its checkpoint moved away, the clip, the answers in place)."""
    from videorope_trt.export.exporter import ExportConfig, export_checkpoint
    from videorope_trt.media.synthetic import make_synthetic_video

    root = tmp_path_factory.mktemp("alone")
    ckpt = shutil.copytree(tiny_ckpt, root / "ckpt")
    export_checkpoint(ckpt, root / "out", ExportConfig(rotary_form="decomposed", precision="fp32"))
    clip = make_synthetic_video(root / "clip.mp4", seconds=2, fps=4, width=112, height=84).path
    return root, ckpt, clip


def _answer(capsys, *args) -> str:
    assert main(["run", *map(str, args), "--prompt", "What moves?", "--max-new-tokens", "6", "--no-progress",
                 "--prefill-chunk", "64"]) == 0
    return capsys.readouterr().out


def test_a_copied_artifact_answers_without_its_checkpoint(moved, capsys):
    root, ckpt, clip = moved
    in_place = _answer(capsys, root / "out", "--backend", "onnxruntime", "--video", clip)
    assert in_place == _answer(capsys, ckpt, "--backend", "torch", "--video", clip, "--device", "cpu",
                               "--dtype", "float32")
    shutil.copytree(root / "out", root / "elsewhere")
    shutil.move(ckpt, root / "gone")
    try:
        assert _answer(capsys, root / "elsewhere", "--backend", "onnxruntime", "--video", clip) == in_place
        # the PyTorch backend needs the checkpoint's weights: where they went is a clear error
        assert main(["run", str(root / "elsewhere"), "--backend", "torch", "--prompt", "hi", "--no-progress"]) == 2
        assert "the checkpoint recorded in manifest.json" in capsys.readouterr().err
        # and another checkpoint than the artifact's own is refused
        other = shutil.copytree(root / "gone", root / "other")
        (other / "config.json").write_text((other / "config.json").read_text().replace("}", ', "note": 1}', 1))
        assert main(["run", str(root / "elsewhere"), "--backend", "torch", "--checkpoint", str(other),
                     "--prompt", "hi", "--no-progress"]) == 2
        assert "is not the one" in capsys.readouterr().err
    finally:
        shutil.move(root / "gone", ckpt)


# -- the plan's terms against what each backend allocates ---------------------------------------------------------

CAPACITY, BATCH = 300, 2


def _plan(tiny_ckpt, runtime: str, precision: str):
    from videorope_trt.build.plan import PlanRequest, plan_memory

    return plan_memory(tiny_ckpt, "h100", PlanRequest(precision=precision, runtime=runtime, max_context=CAPACITY,
                                                      batch=BATCH, prefill_chunk=64))


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@pytest.mark.parametrize("dtype,precision", [("float32", "fp32"), ("float16", "fp16")])
def test_the_torch_backend_allocates_the_plans_kv_cache(tiny_ckpt, dtype, precision):
    from videorope_trt.runtime.backends.torch.backend import TorchBackend, TorchOptions

    be = TorchBackend.load(tiny_ckpt, TorchOptions(device="cpu", dtype=dtype))
    be.allocate(BATCH, CAPACITY)
    plan = _plan(tiny_ckpt, "torch", precision)
    assert _bytes(be.fast.keys + be.fast.values) == plan.kv_cache_bytes  # one cache, rows whole splits
    assert plan.kv_rows == be.fast.rows == 512


def test_the_tensorrt_backend_allocates_the_plans_kv_cache(tiny_ckpt):
    from videorope_trt.artifact.model_config import read_model_config
    from videorope_trt.artifact.specs import cache_names
    from videorope_trt.runtime.backends.trt_engine import KVCache

    m = read_model_config(tiny_ckpt)
    names = [n for i in range(m.num_layers) for n in cache_names(i)]
    kv = KVCache(names, BATCH, m.num_kv_heads, CAPACITY, m.head_dim, torch.float16, "cpu")
    plan = _plan(tiny_ckpt, "tensorrt", "fp16")
    assert kv.nbytes == _bytes(kv.buffers.values()) == plan.kv_cache_bytes  # one cache, written in place
    assert plan.kv_copies == 1


def test_the_onnxruntime_backend_holds_the_plans_kv_cache_and_logits(tiny_ckpt, moved):
    """A full cache's present K/V (one copy: the call's past is the other) and the last position's logits."""
    from videorope_trt.runtime.backends import open_backend

    root, _, _ = moved
    be = open_backend("onnxruntime", root / "out")
    be.allocate(BATCH, CAPACITY)
    embeds = torch.zeros(BATCH, CAPACITY, be.info.hidden_size)
    positions = torch.arange(CAPACITY, dtype=torch.float32).expand(3, BATCH, CAPACITY).contiguous()
    logits = be.forward(embeds, positions, torch.ones(BATCH, CAPACITY, dtype=torch.int64))
    plan = _plan(tiny_ckpt, "onnxruntime", "fp32")
    one_copy = sum(v.numpy().nbytes for v in be.caches)
    assert 2 * one_copy == plan.kv_cache_bytes
    assert tuple(logits.shape) == (BATCH, be.info.vocab_size)
    m = be.info  # the plan's activation term less one chunk's hidden states: the logits it counts
    hidden = BATCH * 64 * 4 * (4 * m.hidden_size + 2 * m.kv_dim + 3 * m.intermediate_size)
    assert plan.decoder_activation_bytes - hidden == logits.numel() * 4  # (B, 1, vocab) fp32
