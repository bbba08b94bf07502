"""Accuracy of a quantized model against its float reference, on held-out samples.

    per layer   cosine of every GEMM's output (hooks on the Linear / QDQLinear modules of the language model)
    end to end  logits cosine, top-1 agreement (argmax of every prompt position), greedy-token agreement
                (the fraction of the N free-running greedy tokens that equal the reference's, position by
                position), and, when an exported graph is given, the same cosine for ONNX Runtime's logits

The reference is measured first and kept (`reference`), so the float and the quantized model never need to be in
memory together: the quantized model is the same model, quantized in place afterwards.
"""

from __future__ import annotations

import contextlib

import numpy as np


def cosine(a, b) -> float:
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denom) if denom > 0 else float(np.array_equal(a, b))


def _gemms(model) -> dict:
    """name → module for the language model's GEMMs and the LM head (the layers quantization changes)."""
    import torch

    from videorope_trt.calibration.qdq import QDQLinear

    out = {}
    for name, m in model.named_modules():
        if isinstance(m, (torch.nn.Linear, QDQLinear)) and ".visual." not in f".{name}.":
            out[name.removeprefix("hf.model.language_model.").removeprefix("hf.")] = m
    return out


@contextlib.contextmanager
def record_gemm_outputs(model, store: dict):
    """Append every GEMM's output (float32, CPU) to store[name] while the block runs."""
    handles = []
    for name, m in _gemms(model).items():
        def hook(_m, _inp, out, name=name):
            store.setdefault(name, []).append(out.detach().float().cpu())
        handles.append(m.register_forward_hook(hook))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def measure(model, samples, greedy_tokens: int, bar=None) -> dict:
    """Per-sample logits, greedy tokens and GEMM outputs of `model` on `samples`."""
    from videorope_trt.calibration.data import greedy, prompt_logits

    logits, tokens, gemms = [], [], {}
    for s in samples if bar is None else bar(samples, desc="held-out", unit="sample"):
        with record_gemm_outputs(model, gemms):
            logits.append(prompt_logits(model, s)[0].float().numpy())
        tokens.append(greedy(model, s, greedy_tokens).numpy() if greedy_tokens else np.zeros(0, np.int64))
    return {"logits": logits, "tokens": tokens, "gemms": gemms}


def compare(reference: dict, quantized: dict) -> dict:
    """The report's numbers for a quantized measurement against the reference one."""
    ref_l, q_l = reference["logits"], quantized["logits"]
    per_sample = [cosine(a, b) for a, b in zip(q_l, ref_l)]
    top1 = np.concatenate([a.argmax(-1) == b.argmax(-1) for a, b in zip(q_l, ref_l)])
    greedy = [np.mean(a == b) if len(b) else 1.0 for a, b in zip(quantized["tokens"], reference["tokens"])]
    layers = {name: cosine(np.concatenate([t.ravel() for t in quantized["gemms"][name]]),
                           np.concatenate([t.ravel() for t in ref]))
              for name, ref in reference["gemms"].items() if name in quantized["gemms"]}
    return {
        "logits_cosine": cosine(np.concatenate([a.ravel() for a in q_l]), np.concatenate([b.ravel() for b in ref_l])),
        "logits_cosine_min": min(per_sample),
        "top1_agreement": float(top1.mean()),
        "greedy_agreement": float(np.mean(greedy)),
        "greedy_tokens": int(len(reference["tokens"][0])),
        "layers": layers,
    }


def onnx_logits(onnx_path, feeds: list, num_layers: int, kv_shape: tuple) -> list:
    """Logits of the exported decoder graph in ONNX Runtime (CPU) for first-prefill feeds (empty caches of the
    prompt's length, written from row 0)."""
    import onnxruntime as ort

    from videorope_trt.artifact.specs import cache_names
    from videorope_trt.plugins import ort_op

    options = ort.SessionOptions()
    # ONNX Runtime's own Q/DQ fusions (MatMulIntegerToFloat, MatMulNBits) compute differently from the graph's
    # literal QuantizeLinear / DequantizeLinear; without them it runs what TensorRT reads, op for op.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort_op.inference_session(onnx_path, options=options)
    wanted = {i.name: i for i in sess.get_inputs()}
    out = []
    for feed in feeds:
        full = dict(feed)
        batch, length = feed["inputs_embeds"].shape[:2]
        empty = np.zeros((batch, kv_shape[0], length, kv_shape[1]), np.float32)
        full["write_offset"] = np.zeros(batch, np.int32)
        for layer in range(num_layers):
            for n in cache_names(layer):
                full[n] = empty.astype(_np_type(wanted[n].type))
        full["inputs_embeds"] = full["inputs_embeds"].astype(_np_type(wanted["inputs_embeds"].type))
        out.append(sess.run(["logits"], {k: v for k, v in full.items() if k in wanted})[0][0].astype(np.float32))
    return out


def _np_type(ort_type: str):
    return np.float16 if "float16" in ort_type else np.float32


def table(report: dict, worst: int = 8) -> str:
    """The report as text: end-to-end figures, then the GEMMs with the lowest output cosine."""
    r = report["accuracy"]
    lines = [f"calibration {report['precision']}: {report['samples']['calibration']} calibration / "
             f"{report['samples']['held_out']} held-out samples, {report['quantized_gemms']} GEMMs quantized",
             f"  {'logits cosine':<28}{r['logits_cosine']:.6f}  (worst sample {r['logits_cosine_min']:.6f})",
             f"  {'top-1 agreement':<28}{r['top1_agreement']:.4f}",
             f"  {'greedy-token agreement':<28}{r['greedy_agreement']:.4f}  ({r['greedy_tokens']} tokens)"]
    o = report.get("onnx") or {}
    if "skipped" in o:
        lines.append(f"  {'ONNX Runtime check':<28}skipped: {o['skipped']}")
    elif o:
        lines.append(f"  {'ONNX Runtime logits cosine':<28}{o['logits_cosine_vs_float']:.6f} vs float, "
                     f"{o['logits_cosine_vs_torch']:.6f} vs the quantized PyTorch model")
    lines.append(f"  {'layer (lowest cosine first)':<44}cosine")
    for name, c in sorted(r["layers"].items(), key=lambda kv: kv[1])[:worst]:
        lines.append(f"  {name:<44}{c:.6f}")
    return "\n".join(lines)
