"""Post-training quantization at the PyTorch level with NVIDIA ModelOpt, then conversion to plain Q/DQ modules.

    model (fp32) ── mtq.quantize(model, cfg, forward_loop over calibration samples) ──► QuantLinear modules
                 ── to_qdq ──► QDQLinear modules (weights stored int8 / fp8 per output channel, activation
                               scale per tensor, SmoothQuant multiplier): what the ONNX holds, op for op

ModelOpt does the calibration (max amax; SmoothQuant's per-channel migration for int8-sq). Its own ONNX export
fails under torch.onnx's dynamo exporter on fake-quant (docs/facts.md, "ModelOpt beside a CPU ONNX Runtime"), so
the calibrated scales are moved into `QDQLinear`, whose ops translate to plain QuantizeLinear / DequantizeLinear
(qdq.py). The LM head and, unless asked,
the vision tower stay in float (ModelOpt's defaults; quantizing the vision tower costs accuracy in published
reports).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

from videorope_trt.artifact.precisions import get_precision

if TYPE_CHECKING:  # annotations only: importing torch here would make `calibrate --help` heavy
    from videorope_trt.calibration.qdq import QDQLinear


@dataclass(frozen=True)
class QuantMode:
    name: str
    modelopt_cfg: str  # the config's name in modelopt.torch.quantization
    weight_type: str  # key of QUANT_TYPES
    act_type: str | None  # None: weight-only
    description: str


#: SmoothQuant's migration strength unless told otherwise: the paper's 0.5 rather than ModelOpt's 1.0, which on a
#: Qwen2-VL-2B-shaped model moves whole activation ranges into the per-channel weight scales and loses accuracy
#: (bench/bench_calibration.py; docs/benchmarks.md, "Export and calibration").
DEFAULT_ALPHA = 0.5

MODES = {m.name: m for m in [
    QuantMode("int8-sq", "INT8_SMOOTHQUANT_CFG", "int8", "int8", "INT8 SmoothQuant W8A8"),
    QuantMode("int8-wo", "INT8_WEIGHT_ONLY_CFG", "int8", None, "INT8 weight-only"),
    QuantMode("fp8", "FP8_DEFAULT_CFG", "fp8", "fp8", "FP8 E4M3 W8A8 (Hopper and newer)"),
]}


#: how to get ModelOpt: the package's `quant` extra, or the version requirements/lock.txt pins (and tests)
MODELOPT_INSTALL = ("pip install 'videorope-trt[quant]', or the tested version as requirements/lock.txt pins it: "
                    "pip install nvidia-modelopt==0.47.0 requests")


class ModelOptMissing(ImportError):
    """NVIDIA ModelOpt (what calibrates) cannot be imported here; the message says how to install it."""


def require_modelopt() -> None:
    """Import ModelOpt's quantization, or raise ModelOptMissing with the install command: `calibrate` calls this
    before any work, rather than failing after decoding its videos."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its notice that this transformers version is untested by it
            import modelopt.torch.quantization  # noqa: F401  imported to find out whether it imports
    except ImportError as e:
        raise ModelOptMissing(f"calibration needs NVIDIA ModelOpt, which does not import here ({e}); install it: "
                              f"{MODELOPT_INSTALL}") from None


def get_mode(name: str) -> QuantMode:
    """The quantization mode of a precision `calibrate` writes (a ValueError names the others)."""
    get_precision(name, made_by="calibrate")
    return MODES[name]


def modelopt_config(mode: QuantMode, quantize_vision: bool = False, alpha: float | None = None) -> dict:
    """ModelOpt's config for the mode, with per-channel weights (TensorRT allows per-channel only for weights,
    per-tensor only for activations) and the vision tower optionally enabled. `alpha`: SmoothQuant's migration
    strength (None: DEFAULT_ALPHA; 1.0 moves all of an activation channel's range into the weights, 0.5 splits it)."""
    import modelopt.torch.quantization as mtq

    cfg = copy.deepcopy(getattr(mtq, mode.modelopt_cfg))
    bits = (4, 3) if mode.weight_type == "fp8" else 8
    entries = []
    for e in cfg["quant_cfg"]:
        name = e.get("quantizer_name")
        if name == "*weight_quantizer" and "cfg" in e:
            e = {**e, "cfg": {**e["cfg"], "num_bits": bits, "axis": 0}}
        if quantize_vision and name == "*visual*":
            continue
        entries.append(e)
    algorithm = cfg.get("algorithm")
    if alpha is None and algorithm == "smoothquant":
        alpha = DEFAULT_ALPHA
    if alpha is not None:
        if not (0.0 <= alpha <= 1.0) or algorithm != "smoothquant":
            raise ValueError(f"alpha {alpha!r}: expected a number in [0, 1], for a SmoothQuant mode (int8-sq); "
                             f"{mode.name} uses {algorithm!r}")
        algorithm = {"method": "smoothquant", "alpha": float(alpha)}
    return {**cfg, "quant_cfg": entries, "algorithm": algorithm}


def calibrate_model(model, mode: QuantMode, forward_loop, *, quantize_vision: bool = False,
                    alpha: float | None = None):
    """Run ModelOpt PTQ on `model` in place (`forward_loop(model)` feeds the calibration samples); returns it."""
    import warnings

    import modelopt.torch.quantization as mtq

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers-version and per-module smoothing notices
        return mtq.quantize(model, modelopt_config(mode, quantize_vision, alpha), forward_loop)


def _amax(quantizer):
    amax = getattr(quantizer, "amax", None)
    if amax is None:
        raise ValueError(f"quantizer {quantizer} has no amax; was the calibration forward loop empty?")
    return amax.detach().float()


def qdq_linear(module, mode: QuantMode) -> QDQLinear:
    """The calibrated ModelOpt QuantLinear as a QDQLinear."""
    import torch

    from videorope_trt.calibration.qdq import QUANT_TYPES, QDQLinear, quantize

    wtype = QUANT_TYPES[mode.weight_type]
    weight = module.weight.detach().float()
    w_amax = _amax(module.weight_quantizer).reshape(-1, 1).expand(weight.shape[0], 1)
    w_scale = torch.clamp(w_amax, min=1e-12) / wtype.max_value  # an all-zero channel keeps a usable scale
    act_scale = smooth = None
    iq = module.input_quantizer
    if mode.act_type is not None and iq.is_enabled:
        act_scale = torch.clamp(_amax(iq).amax(), min=1e-12) / QUANT_TYPES[mode.act_type].max_value
        if iq.pre_quant_scale is not None:
            smooth = iq.pre_quant_scale.detach().float().reshape(-1)
    bias = None if module.bias is None else module.bias.detach()
    return QDQLinear(quantize(weight, w_scale, wtype), w_scale, bias, act_scale, smooth,
                     mode.act_type if act_scale is not None else None).to(module.weight.device)


def to_qdq(model, mode: QuantMode) -> int:
    """Replace every enabled ModelOpt QuantLinear of `model` by its QDQLinear, in place; returns how many."""
    import torch
    from modelopt.torch.quantization.nn import TensorQuantizer

    swaps = [(name, qdq_linear(m, mode)) for name, m in model.named_modules()
             if isinstance(m, torch.nn.Linear) and hasattr(m, "weight_quantizer") and m.weight_quantizer.is_enabled]
    for m in model.modules():
        # anything else ModelOpt quantized (the vision patch-embedding convolution) stays float: only GEMMs get Q/DQ
        if isinstance(m, TensorQuantizer):
            m.disable()
    for name, replacement in swaps:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, replacement)
    _strip_modelopt(model)
    return len(swaps)


def _strip_modelopt(model) -> None:
    """Turn the remaining (disabled) ModelOpt quantized modules back into their float classes."""
    import torch

    for name, m in list(model.named_modules()):
        if hasattr(m, "weight_quantizer") and isinstance(m, torch.nn.Linear):
            plain = torch.nn.Linear(m.in_features, m.out_features, bias=m.bias is not None,
                                    device=m.weight.device, dtype=m.weight.dtype)
            plain.weight = m.weight
            plain.bias = m.bias
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, plain)
