"""The two ONNX forms of `VideoRopeCache` (contract in `rope/contract.py`): rotate q and k, write the rotated k
and the v into the caches at a per-sequence offset.

The exporter translates `torch.ops.videorope.VideoRopeCache` into one opaque node (the `plugin` form, through
`translation_table()`), and `switch_cache_form` then rewrites those nodes into the requested form:

    plugin      VideoRopeCache (domain ai.onnx.contrib, TensorRT plugin attributes)    unchanged; TensorRT updates
                                                                                       the caches in place
    decomposed  standard ops only, the ONNX local function videorope.VideoRopeCacheDecomposed

The decomposed body uses only ops that exist at opset 18 and keep their meaning through opset 23 (Shape, Gather,
Range, Mul, Cos, Sin, Where, GatherElements, ScatterElements, ...); its default-domain import is set to the model's
(ONNX requires a local function's imports to agree with the model's). The cache write is one ScatterElements on
the sequence axis per cache: its indices have the update's shape (B, KV, S, D), so no transpose of the cache and
no index tensor of the cache's size; ScatterND would index a (b, row) prefix, which is not a prefix of (B, KV, C, D).
ScatterElements refuses out-of-range indices, so each token's row is clamped into [0, C) and the token writes the
value that row must end with (its own rotated key, the key of the token that owns the row, or the cache's own
value): duplicates agree and rows outside the cache stay untouched. The output is a new cache (ONNX has no in-place
update); C >= 1. Layout-1 nodes get Transposes of q, k, v and q_rot around the call, so the body is (B, H, S, D) only.
"""

from __future__ import annotations

import onnx
import onnxscript
from onnxscript import FLOAT, INT32, opset18 as op
from onnxscript.function_libs.torch_lib.tensor_typing import TFloat

from videorope_trt.rope.contract import CACHE_OP_NAME, FUNCTION_DOMAIN, LAYOUT_BSHD, ONNX_DOMAIN, RotaryAttrs

MIN_OPSET = 18
_contrib = onnxscript.values.Opset(ONNX_DOMAIN, 1)
_functions = onnxscript.values.Opset(FUNCTION_DOMAIN, 1)
_DROPPED_ATTRS = ("plugin_namespace", "plugin_version", "layout")


@onnxscript.script(_contrib)
def _plugin_node(
    q: TFloat, k: TFloat, v: TFloat, positions: FLOAT, inv_freq: FLOAT, axis_map: INT32, k_cache: TFloat,
    v_cache: TFloat, write_offset: INT32, interleaved: int = 0, layout: int = 0, scale: float = 1.0,
) -> tuple[TFloat, TFloat, TFloat]:
    q_rot, k_cache_out, v_cache_out = _contrib.VideoRopeCache(
        q, k, v, positions, inv_freq, axis_map, k_cache, v_cache, write_offset, interleaved=interleaved,
        layout=layout, scale=scale, plugin_namespace="videorope", plugin_version="1",
    )
    return q_rot, k_cache_out, v_cache_out


def translation_table() -> dict:
    """`custom_translation_table` for torch.onnx.export (dynamo=True): the torch op → one `VideoRopeCache` node."""
    import torch

    import videorope_trt.plugins.torch_op  # noqa: F401  registers torch.ops.videorope.VideoRopeCache

    return {torch.ops.videorope.VideoRopeCache.default: _plugin_node}


@onnxscript.script(_functions)
def VideoRopeCacheDecomposed(  # noqa: N802  ONNX function names are CamelCase
    q: TFloat, k: TFloat, v: TFloat, positions: FLOAT, inv_freq: FLOAT, axis_map: INT32, k_cache: TFloat,
    v_cache: TFloat, write_offset: INT32, interleaved: int = 0, scale: float = 1.0,
) -> tuple[TFloat, TFloat, TFloat]:
    # The rotation, as VideoRope's decomposed form, on (B, H, S, D): y[d] = x[d] c[d] + x[partner[d]] s[d] over the
    # head dim, dims >= 2F passing through (c = 1, s = 0); the tables are built once and serve q and k.
    zero = op.Constant(value_int=0)
    one = op.Constant(value_int=1)
    two = op.Constant(value_int=2)
    f = op.Gather(op.Shape(inv_freq), zero)
    d = op.Range(zero, op.Gather(op.Shape(q), op.Constant(value_int=3)), one)
    rotated = op.Less(d, op.Mul(f, two))
    inter = op.Cast(op.Constant(value_int=interleaved), to=onnx.TensorProto.BOOL)
    odd = op.Mod(d, two)
    kf = op.Where(rotated, op.Where(inter, op.Div(d, two), op.Mod(d, f)), zero)
    partner = op.Where(rotated, op.Where(inter, op.Sub(op.Add(d, one), op.Mul(odd, two)),
                                         op.Mod(op.Add(d, f), op.Mul(f, two))), d)
    first = op.Or(op.And(inter, op.Equal(odd, zero)), op.And(op.Not(inter), op.Less(d, f)))  # takes -sin
    sign = op.Where(rotated, op.Where(first, op.Constant(value_float=-1.0), op.Constant(value_float=1.0)),
                    op.Constant(value_float=0.0))
    angle = op.Mul(op.Transpose(op.Gather(positions, axis_map, axis=0), perm=[1, 2, 0]), inv_freq)  # (B, S, F) fp32
    angle_d = op.Gather(angle, kf, axis=2)  # (B, S, D)
    gain = op.Constant(value_float=scale)
    heads = op.Constant(value_ints=[1])
    c = op.CastLike(op.Unsqueeze(op.Where(rotated, op.Mul(op.Cos(angle_d), gain), op.Constant(value_float=1.0)),
                                 heads), q)
    s = op.CastLike(op.Unsqueeze(op.Mul(op.Mul(op.Sin(angle_d), gain), sign), heads), q)
    q_rot = op.Add(op.Mul(q, c), op.Mul(op.Gather(q, partner, axis=3), s))
    k_rot = op.Add(op.Mul(k, c), op.Mul(op.Gather(k, partner, axis=3), s))
    # The writes: token (b, s) targets row r = clamp(offset[b] + s, 0, C - 1) with the value r must end with.
    seq = op.Gather(op.Shape(k), two)
    off = op.Unsqueeze(op.Cast(write_offset, to=onnx.TensorProto.INT64), heads)  # (B, 1)
    last = op.Sub(op.Gather(op.Shape(k_cache), two), one)
    rows = op.Min(op.Max(op.Add(off, op.Range(zero, seq, one)), zero), last)  # (B, S)
    rel = op.Sub(rows, off)  # the token that owns row r, when 0 <= rel < S
    own = op.And(op.Not(op.Less(rel, zero)), op.Less(rel, seq))
    src = op.Min(op.Max(rel, zero), op.Sub(seq, one))
    edges = op.Constant(value_ints=[1, 3])
    shape = op.Shape(k)
    row_idx = op.Expand(op.Unsqueeze(rows, edges), shape)  # (B, KV, S, D)
    src_idx = op.Expand(op.Unsqueeze(src, edges), shape)
    own4 = op.Unsqueeze(own, edges)
    k_new = op.Where(own4, op.GatherElements(k_rot, src_idx, axis=2), op.GatherElements(k_cache, row_idx, axis=2))
    v_new = op.Where(own4, op.GatherElements(v, src_idx, axis=2), op.GatherElements(v_cache, row_idx, axis=2))
    k_cache_out = op.ScatterElements(k_cache, row_idx, k_new, axis=2)
    v_cache_out = op.ScatterElements(v_cache, row_idx, v_new, axis=2)
    return q_rot, k_cache_out, v_cache_out


def node_attrs(node: onnx.NodeProto) -> RotaryAttrs:
    """The `RotaryAttrs` of a `VideoRope` or `VideoRopeCache` node (checked by RotaryAttrs itself)."""
    values = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    return RotaryAttrs(int(values.get("interleaved", 0)), int(values.get("layout", 0)), float(values.get("scale", 1.0)))


def _cache_nodes(graph: onnx.GraphProto) -> list:
    return [n for n in graph.node if n.op_type == CACHE_OP_NAME and n.domain == ONNX_DOMAIN]


def _check_opset(model: onnx.ModelProto) -> None:
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if version is None or version < MIN_OPSET:
        raise ValueError(f"the decomposed VideoRopeCache form needs a model at opset >= {MIN_OPSET} (ScatterElements "
                         f"and the rotation's ops as of opset 18); the model imports the default domain at {version}")


def add_local_function(model: onnx.ModelProto, script_fn) -> onnx.FunctionProto:
    """Add the onnxscript function `script_fn` to `model` as a local function (once) and import its domain. The
    function imports the model's own version of the standard domain (the checker requires it); the rotary ops'
    bodies mean the same from opset 18 to 23 (the exporter writes 20 and 23)."""
    proto = script_fn.to_function_proto()
    version = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            imp.version = version
    if not any(f.name == proto.name and f.domain == proto.domain for f in model.functions):
        model.functions.append(proto)
    if FUNCTION_DOMAIN not in {o.domain for o in model.opset_import}:
        model.opset_import.append(onnx.helper.make_opsetid(FUNCTION_DOMAIN, 1))
    return proto


def drop_unused_imports(model: onnx.ModelProto) -> None:
    """Keep only the opset imports that a node of the graph or of a local function uses (and the standard one)."""
    used = {n.domain for n in model.graph.node} | {n.domain for f in model.functions for n in f.node}
    keep = [o for o in model.opset_import if o.domain in used or o.domain in ("", "ai.onnx")]
    del model.opset_import[:]
    model.opset_import.extend(keep)


def _transpose(name_in: str, name_out: str, node_name: str) -> onnx.NodeProto:
    return onnx.helper.make_node("Transpose", [name_in], [name_out], name=node_name, perm=[0, 2, 1, 3])


def _function_call(node: onnx.NodeProto) -> list:
    """The nodes that replace one VideoRopeCache node: the function call, with Transposes for layout 1."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute if a.name not in _DROPPED_ATTRS}
    inputs, outputs, before, after = list(node.input), list(node.output), [], []
    if node_attrs(node).layout == LAYOUT_BSHD:  # the body works on (B, H, S, D); the caches are that already
        for i in range(3):
            before.append(_transpose(inputs[i], inputs[i] + "__bhsd", f"{node.name}/to_bhsd_{i}"))
            inputs[i] += "__bhsd"
        after.append(_transpose(outputs[0] + "__bhsd", outputs[0], f"{node.name}/to_bshd"))
        outputs[0] += "__bhsd"
    call = onnx.helper.make_node(VideoRopeCacheDecomposed.name, inputs, outputs, name=node.name,
                                 domain=FUNCTION_DOMAIN, **attrs)
    return before + [call] + after


def _to_decomposed(model: onnx.ModelProto) -> None:
    if not _cache_nodes(model.graph):
        return
    _check_opset(model)
    add_local_function(model, VideoRopeCacheDecomposed)
    nodes = []
    for node in model.graph.node:
        is_cache = node.op_type == CACHE_OP_NAME and node.domain == ONNX_DOMAIN
        nodes += _function_call(node) if is_cache else [node]
    copies = [onnx.NodeProto.FromString(n.SerializeToString()) for n in nodes]  # detached from the old list
    del model.graph.node[:]
    model.graph.node.extend(copies)
    drop_unused_imports(model)


CACHE_FORMS = {"plugin": lambda model: None, "decomposed": _to_decomposed}


def switch_cache_form(model: onnx.ModelProto, form: str) -> onnx.ModelProto:
    """Rewrite every `VideoRopeCache` node of `model` (in place) into `form`; returns the model."""
    if form not in CACHE_FORMS:
        raise ValueError(f"unknown VideoRopeCache form {form!r}; expected one of {sorted(CACHE_FORMS)}")
    CACHE_FORMS[form](model)
    return model


def cache_node_count(model: onnx.ModelProto) -> int:
    return len(_cache_nodes(model.graph))
