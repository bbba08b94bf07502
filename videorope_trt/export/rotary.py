"""The three ONNX forms of the rotary op (`VideoRope`, contract in `rope/contract.py`).

The exporter always translates `torch.ops.videorope.VideoRope` into one opaque ONNX node (the `plugin` form), and
`switch_form` then rewrites those nodes into the requested form:

    plugin      VideoRope (domain ai.onnx.contrib, TensorRT plugin attributes)      unchanged
    native      Gather/Transpose/Mul/Cos/Sin → opset-23 RotaryEmbedding             inlined into the graph
    decomposed  standard ops only, kept as the ONNX local function videorope.VideoRopeDecomposed

Why a rewrite after export instead of three translation-table entries: the opaque node survives torch.onnx's
optimizer and the FP16 conversion untouched (the angle must stay fp32), and torch.onnx's opset converter inlines
every function, so a local function can only be added after export anyway.
"""

from __future__ import annotations

import onnx
import onnxscript
from onnxscript import FLOAT, INT32, opset23 as op
from onnxscript.function_libs.torch_lib.tensor_typing import TFloat

from videorope_trt.plugins.cache_forms import add_local_function, drop_unused_imports, node_attrs
from videorope_trt.rope.contract import FUNCTION_DOMAIN, LAYOUT_BSHD, ONNX_DOMAIN, OP_NAME

_contrib = onnxscript.values.Opset(ONNX_DOMAIN, 1)
_functions = onnxscript.values.Opset(FUNCTION_DOMAIN, 1)
_PLUGIN_ONLY_ATTRS = ("plugin_namespace", "plugin_version")


@onnxscript.script(_contrib)
def _plugin_node(
    x: TFloat, positions: FLOAT, inv_freq: FLOAT, axis_map: INT32, interleaved: int = 0, layout: int = 0,
    scale: float = 1.0,
) -> TFloat:
    y = _contrib.VideoRope(
        x, positions, inv_freq, axis_map, interleaved=interleaved, layout=layout, scale=scale,
        plugin_namespace="videorope", plugin_version="1",
    )
    return y


def translation_table() -> dict:
    """`custom_translation_table` for torch.onnx.export (dynamo=True): the torch op → one `VideoRope` node."""
    import torch

    import videorope_trt.plugins.torch_op  # noqa: F401  registers torch.ops.videorope.VideoRope

    return {torch.ops.videorope.VideoRope.default: _plugin_node}


@onnxscript.script(_functions)
def VideoRopeNative(  # noqa: N802  ONNX function names are CamelCase
    x: TFloat, positions: FLOAT, inv_freq: FLOAT, axis_map: INT32, interleaved: int = 0, scale: float = 1.0,
    rotary_dim: int = 0,
) -> TFloat:
    # x is (B, H, S, D), the layout RotaryEmbedding takes; layout-1 nodes get Transposes around the call.
    # angle (B, S, F) in fp32: position row per frequency times its inverse frequency
    angle = op.Mul(op.Transpose(op.Gather(positions, axis_map, axis=0), perm=[1, 2, 0]), inv_freq)
    gain = op.Constant(value_float=scale)
    cos = op.CastLike(op.Mul(op.Cos(angle), gain), x)
    sin = op.CastLike(op.Mul(op.Sin(angle), gain), x)
    return op.RotaryEmbedding(x, cos, sin, interleaved=interleaved, rotary_embedding_dim=rotary_dim)


@onnxscript.script(_functions)
def VideoRopeDecomposed(  # noqa: N802  ONNX function names are CamelCase
    x: TFloat, positions: FLOAT, inv_freq: FLOAT, axis_map: INT32, interleaved: int = 0, layout: int = 0,
    scale: float = 1.0,
) -> TFloat:
    # y[d] = x[d] * c[d] + x[partner[d]] * s[d] over the head dim D: each rotated dim reads the cos/sin of its
    # frequency k[d] and its pair partner with a sign; dims at and beyond 2F pass through (c = 1, s = 0).
    # Both pairings' index tables are built and the `interleaved` attribute picks one (they fold to constants).
    zero = op.Constant(value_int=0)
    one = op.Constant(value_int=1)
    two = op.Constant(value_int=2)
    f = op.Squeeze(op.Shape(inv_freq))
    d = op.Range(zero, op.Squeeze(op.Shape(x, start=-1)), one)
    rotated = op.Less(d, op.Mul(f, two))
    inter = op.Cast(op.Constant(value_int=interleaved), to=onnx.TensorProto.BOOL)
    odd = op.Mod(d, two)
    k = op.Where(rotated, op.Where(inter, op.Div(d, two), op.Mod(d, f)), zero)
    partner_half = op.Mod(op.Add(d, f), op.Mul(f, two))
    partner_pair = op.Sub(op.Add(d, one), op.Mul(odd, two))
    partner = op.Where(rotated, op.Where(inter, partner_pair, partner_half), d)
    # the first element of its pair: takes -sin
    first = op.Or(op.And(inter, op.Equal(odd, zero)), op.And(op.Not(inter), op.Less(d, f)))
    sign = op.Where(rotated, op.Where(first, op.Constant(value_float=-1.0), op.Constant(value_float=1.0)),
                    op.Constant(value_float=0.0))
    # angle (B, S, F) in fp32, then one column per head dim: (B, S, D)
    angle = op.Mul(op.Transpose(op.Gather(positions, axis_map, axis=0), perm=[1, 2, 0]), inv_freq)
    angle_d = op.Gather(angle, k, axis=2)
    gain = op.Constant(value_float=scale)
    c = op.Where(rotated, op.Mul(op.Cos(angle_d), gain), op.Constant(value_float=1.0))
    s = op.Mul(op.Mul(op.Sin(angle_d), gain), sign)
    head_axis = op.Reshape(op.Add(op.Constant(value_int=layout), one), op.Constant(value_ints=[1]))
    c = op.CastLike(op.Unsqueeze(c, head_axis), x)  # broadcast over heads: axis 1 (B,H,S,D) or 2 (B,S,H,D)
    s = op.CastLike(op.Unsqueeze(s, head_axis), x)
    return op.Add(op.Mul(x, c), op.Mul(op.Gather(x, partner, axis=3), s))


def _rotary_nodes(graph: onnx.GraphProto) -> list:
    return [n for n in graph.node if n.op_type == OP_NAME and n.domain == ONNX_DOMAIN]


def _frequencies(model: onnx.ModelProto, node: onnx.NodeProto) -> int:
    """Number of frequencies F of a node: from its inv_freq initializer or, failing that, its inferred shape."""
    name = node.input[2]
    for init in model.graph.initializer:
        if init.name == name:
            return int(init.dims[0])
    inferred = onnx.shape_inference.infer_shapes(model)
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input):
        if vi.name == name and vi.type.tensor_type.shape.dim[0].HasField("dim_value"):
            return int(vi.type.tensor_type.shape.dim[0].dim_value)
    raise ValueError(f"VideoRope node {node.name!r}: cannot find the length of inv_freq {name!r}; expected a static "
                     "(F,)")


def _to_function_call(model, node, function, extra_attrs: dict, drop=()) -> None:
    skip = set(_PLUGIN_ONLY_ATTRS) | set(drop)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute if a.name not in skip}
    attrs.update(extra_attrs)
    call = onnx.helper.make_node(function.name, list(node.input), list(node.output), name=node.name,
                                 domain=FUNCTION_DOMAIN, **attrs)
    node.CopyFrom(call)


def _bshd_transposes(node: onnx.NodeProto) -> tuple:
    """Transposes that let a layout-1 (B, S, H, D) node see (B, H, S, D); rewires `node` in place."""
    x_t, y_t = node.input[0] + "__bhsd", node.output[0] + "__bhsd"
    before = onnx.helper.make_node("Transpose", [node.input[0]], [x_t], name=node.name + "/to_bhsd", perm=[0, 2, 1, 3])
    after = onnx.helper.make_node("Transpose", [y_t], [node.output[0]], name=node.name + "/to_bshd", perm=[0, 2, 1, 3])
    node.input[0], node.output[0] = x_t, y_t
    return before, after


def _to_native(model: onnx.ModelProto) -> None:
    nodes = []
    for original in model.graph.node:
        node = onnx.NodeProto()
        node.CopyFrom(original)  # detached: the graph's node list is rebuilt below
        if not (node.op_type == OP_NAME and node.domain == ONNX_DOMAIN):
            nodes.append(node)
            continue
        layout = node_attrs(node).layout
        extra = {"rotary_dim": 2 * _frequencies(model, node)}
        _to_function_call(model, node, add_local_function(model, VideoRopeNative), extra, drop=("layout",))
        if layout == LAYOUT_BSHD:
            before, after = _bshd_transposes(node)
            nodes += [before, node, after]
        else:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    # The RotaryEmbedding node itself must be visible to TensorRT's parser and ORT: inline the wrapper.
    from onnx import inliner

    inlined = inliner.inline_selected_functions(model, [(FUNCTION_DOMAIN, "VideoRopeNative")])
    model.CopyFrom(inlined)


def _to_decomposed(model: onnx.ModelProto) -> None:
    for node in _rotary_nodes(model.graph):
        _to_function_call(model, node, add_local_function(model, VideoRopeDecomposed), {})


FORMS = {"plugin": lambda model: None, "native": _to_native, "decomposed": _to_decomposed}


def switch_form(model: onnx.ModelProto, form: str) -> onnx.ModelProto:
    """Rewrite every `VideoRope` node of `model` (in place) into `form`; returns the model."""
    if form not in FORMS:
        raise ValueError(f"unknown rotary form {form!r}; expected one of {sorted(FORMS)}")
    if form != "plugin":
        FORMS[form](model)
        drop_unused_imports(model)
    return model
