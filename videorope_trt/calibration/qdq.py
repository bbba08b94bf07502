"""Quantize-dequantize as torch custom ops whose ONNX translation is one QuantizeLinear / DequantizeLinear pair.

TensorRT's explicit quantization rules (docs/facts.md, "Q/DQ rules") shape every choice here: symmetric (zero point 0),
per-channel scales for weights (axis 0 of the (out, in) weight), one per-tensor scale for activations, INT8 or
FP8 E4M3. The ONNX zero point is written explicitly with the quantized type, so ONNX Runtime and TensorRT read the
same type (an FP8 DQ without one makes ONNX Runtime's Q/DQ passes insert uint8 nodes).

    activation:  x ── QuantizeLinear(scale, zp=0) ── DequantizeLinear(scale, zp=0) ──┐
    weight:      w_q (int8 | float8e4m3fn initializer) ── DequantizeLinear(axis=0) ──┴─ MatMul (Linear)

Weights are stored already quantized (1 byte per parameter) with only a DQ after them: TensorRT reads that
directly and no exporter pass can fold a float copy of the weight back into the graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from onnxscript import FLOAT, opset19 as op
from onnxscript.function_libs.torch_lib.tensor_typing import TFloat


@dataclass(frozen=True)
class QuantType:
    """A quantized element type: its torch dtype, the largest magnitude it holds, its ONNX type number."""

    name: str
    torch_dtype: torch.dtype
    max_value: float  # scale = amax / max_value
    onnx_type: int


QUANT_TYPES = {
    "int8": QuantType("int8", torch.int8, 127.0, 3),  # narrow range [-127, 127]: symmetric, as ModelOpt does
    "fp8": QuantType("fp8", torch.float8_e4m3fn, 448.0, 17),
}


def quantize(x: torch.Tensor, scale: torch.Tensor, qtype: QuantType) -> torch.Tensor:
    """x / scale rounded and saturated into `qtype` (ONNX QuantizeLinear semantics, zero point 0)."""
    y = x.float() / scale
    if qtype.name == "int8":
        # ONNX saturates to the full int8 range; rounding is half to even in both torch and ONNX.
        return torch.clamp(torch.round(y), -128, 127).to(torch.int8)
    return torch.clamp(y, -qtype.max_value, qtype.max_value).to(qtype.torch_dtype)


def _qdq_eager(x, scale, qtype):
    return (quantize(x, scale, qtype).float() * scale).to(x.dtype)


def _dq_eager(q, scale, dtype):
    return (q.float() * scale).to(dtype)


# One op per quantized type: the ONNX zero point's type must be a static attribute of the translation.
@torch.library.custom_op("videorope_calib::qdq_int8", mutates_args=())
def qdq_int8(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return _qdq_eager(x, scale, QUANT_TYPES["int8"])


@torch.library.custom_op("videorope_calib::qdq_fp8", mutates_args=())
def qdq_fp8(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return _qdq_eager(x, scale, QUANT_TYPES["fp8"])


@torch.library.custom_op("videorope_calib::dq_weight", mutates_args=())
def dq_weight(q: torch.Tensor, scale: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Dequantize a (out, in) weight with per-output-channel scales (out, 1); result in `like`'s dtype."""
    return _dq_eager(q, scale, like.dtype)


for _op in (qdq_int8, qdq_fp8):
    _op.register_fake(lambda x, scale: torch.empty_like(x))
dq_weight.register_fake(lambda q, scale, like: torch.empty(q.shape, dtype=like.dtype, device=q.device))


def _zero_point(scale, to: int):
    return op.Cast(op.Mul(scale, op.Constant(value_float=0.0)), to=to)


def _qdq_translation(to: int):
    def translate(x: TFloat, scale: FLOAT) -> TFloat:
        s = op.CastLike(scale, x)  # Q/DQ scale type = the activation's float type (fp32 or fp16)
        zp = _zero_point(s, to)
        return op.DequantizeLinear(op.QuantizeLinear(x, s, zp), s, zp)

    return translate


def _dq_weight_translation(q, scale: FLOAT, like: TFloat) -> TFloat:
    s = op.CastLike(op.Squeeze(scale, op.Constant(value_ints=[1])), like)  # (out,) per-channel, axis 0
    return op.DequantizeLinear(q, s, axis=0)


def translation_table() -> dict:
    """`custom_translation_table` entries for torch.onnx.export (dynamo=True)."""
    return {
        torch.ops.videorope_calib.qdq_int8.default: _qdq_translation(QUANT_TYPES["int8"].onnx_type),
        torch.ops.videorope_calib.qdq_fp8.default: _qdq_translation(QUANT_TYPES["fp8"].onnx_type),
        torch.ops.videorope_calib.dq_weight.default: _dq_weight_translation,
    }


QDQ_OPS = {"int8": qdq_int8, "fp8": qdq_fp8}


class QDQLinear(torch.nn.Module):
    """A Linear whose weight is stored quantized (per output channel) and whose input may be fake-quantized
    per tensor, after an optional SmoothQuant per-input-channel multiplier.

        y = linear(qdq(x * smooth, act_scale), dq(w_q, w_scale)) + bias
    """

    def __init__(self, weight_q, weight_scale, bias=None, act_scale=None, smooth=None, act_type=None):
        super().__init__()
        if weight_scale.shape != (weight_q.shape[0], 1):
            raise ValueError(f"QDQLinear: weight_scale must be (out, 1) = ({weight_q.shape[0]}, 1), "
                             f"got {tuple(weight_scale.shape)}")
        if (act_scale is None) != (act_type is None):
            raise ValueError("QDQLinear: act_scale and act_type go together (both or neither)")
        if act_scale is not None and act_scale.numel() != 1:
            raise ValueError(f"QDQLinear: activations are quantized per tensor; got {act_scale.numel()} scales")
        self.register_buffer("weight_q", weight_q)
        self.register_buffer("weight_scale", weight_scale.float())
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.register_buffer("act_scale", None if act_scale is None else act_scale.float().reshape(()))
        self.register_buffer("smooth", None if smooth is None else smooth.float())
        self.act_type = act_type
        self.in_features, self.out_features = weight_q.shape[1], weight_q.shape[0]

    def dequantized_weight(self, dtype=torch.float32) -> torch.Tensor:
        return _dq_eager(self.weight_q, self.weight_scale, dtype)

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized weight: transformers code reads `.weight.dtype` of some Linear to pick the compute type."""
        return self.dequantized_weight(self.weight_scale.dtype)

    def forward(self, x):
        if self.smooth is not None:
            x = x * self.smooth.to(x.dtype)
        if self.act_scale is not None:
            x = QDQ_OPS[self.act_type](x, self.act_scale)
        w = dq_weight(self.weight_q, self.weight_scale, x)
        return torch.nn.functional.linear(x, w, None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        act = "none" if self.act_type is None else f"{self.act_type} per-tensor"
        return (f"in={self.in_features}, out={self.out_features}, weight={self.weight_q.dtype} per-channel, "
                f"activation={act}, smooth={self.smooth is not None}")
