"""FP16 graphs for strongly typed engines (TensorRT 11 / TensorRT-RTX decide precision from the ONNX types).

Converter: onnxconverter-common's `convert_float_to_float16`, a maintained converter that installs cleanly beside
onnxruntime (ModelOpt's onnx extra replaces the CPU onnxruntime with onnxruntime-gpu: docs/facts.md, "ModelOpt
beside a CPU ONNX Runtime").
It runs before the rotary form switch, while the rotation is still one opaque `VideoRope` node, so blocking that
node keeps the whole rotation (angle included) in fp32 whatever form it becomes.

Kept in fp32 (the converter inserts the Casts): norm statistics (RMSNormalization / LayerNormalization, and the
decomposed forms' ReduceMean/Pow), softmax, and the rotation. Graph inputs and outputs are typed as the graph's
spec says (`artifact/specs.py`): the embeddings and the KV cache in fp16 (the converter's boundary Casts removed,
so the cache costs half the bytes), pixel values, positions and logits in fp32. Constants are clamped to ±65504,
which keeps the causal mask's finfo(float32).min finite in fp16 (an -inf would turn a fully padded row into NaN).

The converter leaves explicit `Cast(to=FLOAT)` nodes alone while turning weights to fp16, so a graph whose model
code casts to float (the vision tower's rotary angle: `position_ids.float() * inv_freq`) comes out with fp32 x fp16
nodes, which ONNX Runtime's type checker and TensorRT's strongly typed parser both reject. `unify_float_types`
repairs that afterwards, op by op in topological order, for the inputs an op's schema requires to share one type:
where every computed input is fp32 (the angle) the weights go back to their fp32 originals, so the angle is
exact; where an fp16 activation meets an fp32 one (the vision rotation `q * cos`) the fp32 side is cast to fp16.
"""

from __future__ import annotations

import warnings

import onnx
from onnx import TensorProto

from videorope_trt.rope.contract import CACHE_OP_NAME, OP_NAME

FP32_OPS = ("RMSNormalization", "LayerNormalization", "SimplifiedLayerNormalization", "ReduceMean", "Pow",
            "Softmax", OP_NAME)
#: VideoRopeCache's inputs that stay fp32 (exact fractional positions, exact frequencies); its q/k/v, caches and
#: outputs run in the graph's float type (the op computes its angles in fp32 itself, and TensorRT's plugin must
#: write the caller's fp16 caches in place: a blocked node would get an fp32 copy of every cache)
CACHE_OP_FP32_INPUTS = (3, 4)
FP16_MAX = 65504.0


def to_fp16(model: onnx.ModelProto, spec=None) -> onnx.ModelProto:
    """FP16 copy of an fp32 graph, its I/O typed as `spec` (an `artifact.specs.GraphSpec`) says; see the module
    docstring for what stays fp32."""
    from onnxconverter_common import float16
    from onnxconverter_common.float16 import DEFAULT_OP_BLOCK_LIST

    source, model = model, _isolate_outputs(model)
    with warnings.catch_warnings():  # it warns once per clamped constant; clamping is intended (docstring)
        warnings.simplefilter("ignore", UserWarning)
        out = float16.convert_float_to_float16(
            model, keep_io_types=True, max_finite_val=FP16_MAX,
            op_block_list=list(DEFAULT_OP_BLOCK_LIST) + list(FP32_OPS), disable_shape_infer=False)
    # The converter leaves some intermediate value_info entries typed float; they are hints only, so drop them
    # rather than let a stale type fail the session.
    del out.graph.value_info[:]
    unify_float_types(out, original=source)
    if spec is not None:
        half = [t.name for t in spec.inputs + spec.outputs if t.dtype == "float16"]
        float16_io(out, half)
    fp32_cache_op_inputs(out, source)
    return out


def fp32_cache_op_inputs(model: onnx.ModelProto, original: onnx.ModelProto) -> None:
    """Give each `VideoRopeCache` node its positions and inverse frequencies in fp32 again: the positions graph
    input past the converter's Cast, the frequencies as the exact fp32 initializer of the original graph."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    originals = {i.name: i for i in original.graph.initializer}
    inits = {i.name for i in graph.initializer}
    for node in [n for n in graph.node if n.op_type == CACHE_OP_NAME]:
        for i in CACHE_OP_FP32_INPUTS:
            name = node.input[i]
            cast = producer.get(name)
            if cast is not None and cast.op_type == "Cast" and _to(cast) == TensorProto.FLOAT16:
                node.input[i] = cast.input[0]
            elif name in originals and originals[name].data_type == TensorProto.FLOAT:
                exact = f"{name}__fp32"
                if exact not in inits:
                    init = onnx.TensorProto()
                    init.CopyFrom(originals[name])
                    init.name = exact
                    graph.initializer.append(init)
                    inits.add(exact)
                node.input[i] = exact
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    kept = [n for n in graph.node if not (n.op_type == "Cast" and n.output[0] not in used)]
    del graph.node[:]
    graph.node.extend(kept)
    used = {i for n in graph.node for i in n.input}
    weights = [i for i in graph.initializer if i.name in used]  # the fp16 copies of the frequencies went unused
    del graph.initializer[:]
    graph.initializer.extend(weights)


def _to(node) -> int:
    return next(a.i for a in node.attribute if a.name == "to")


def float16_io(model: onnx.ModelProto, names) -> None:
    """Graph inputs and outputs named in `names` become fp16 in place, the converter's boundary Casts removed."""
    names, graph = set(names), model.graph
    drop, added = set(), []  # Casts that go, known by their outputs (protobuf's node wrappers come and go); new ones
    for value in graph.input:
        if value.name in names and value.type.tensor_type.elem_type == TensorProto.FLOAT:
            casts = {n.output[0] for n in graph.node if n.op_type == "Cast" and list(n.input) == [value.name]}
            fp32 = f"{value.name}__fp32"  # for ops kept in fp32 that read the input as it was (no boundary Cast)
            for node in graph.node:
                if value.name in node.input and node.output[0] not in casts:
                    node.input[:] = [fp32 if i == value.name else i for i in node.input]
                    if not added or added[-1].output[0] != fp32:
                        added.append(onnx.helper.make_node("Cast", [value.name], [fp32], to=TensorProto.FLOAT,
                                                           name=f"{fp32}/cast"))
                node.input[:] = [value.name if i in casts else i for i in node.input]
            drop |= casts
            value.type.tensor_type.elem_type = TensorProto.FLOAT16
    for value in graph.output:
        if value.name in names and value.type.tensor_type.elem_type == TensorProto.FLOAT:
            cast = next(n for n in graph.node if n.op_type == "Cast" and list(n.output) == [value.name])
            source = cast.input[0]
            drop.add(value.name)
            for node in graph.node:
                if node.op_type != "Cast" or list(node.output) != [value.name]:
                    node.output[:] = [value.name if o == source else o for o in node.output]
            value.type.tensor_type.elem_type = TensorProto.FLOAT16
    kept = [n for n in graph.node if not (n.op_type == "Cast" and n.output[0] in drop)]
    del graph.node[:]
    graph.node.extend(added + kept)


_FLOATS = (TensorProto.FLOAT, TensorProto.FLOAT16)


def _schema(node, opsets: dict):
    try:
        return onnx.defs.get_schema(node.op_type, opsets.get(node.domain or "", 1), node.domain)
    except onnx.defs.SchemaError:
        return None  # a custom op (VideoRope): its output has the type of its first input


def _shared_type_inputs(node, schema) -> list:
    """Groups of input positions that the schema binds to one type variable (Mul's A and B, Where's X and Y)."""
    formal, groups = schema.inputs, {}
    for i, name in enumerate(node.input):
        if not name or not formal:
            continue
        param = formal[min(i, len(formal) - 1)]
        if i >= len(formal) and param.option != onnx.defs.OpSchema.FormalParameterOption.Variadic:
            continue
        groups.setdefault(param.type_str, []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def _output_types(node, schema, types: dict, opsets: dict) -> dict:
    first = types.get(node.input[0]) if node.input else None
    if schema is not None and all(types.get(i) for i in node.input if i):
        feeds = {i: onnx.helper.make_tensor_type_proto(types[i], None) for i in node.input if i}
        imports = [onnx.helper.make_opsetid(d, v) for d, v in opsets.items()]
        try:
            inferred = onnx.shape_inference.infer_node_outputs(schema, node, feeds, opset_imports=imports)
            return {k: v.tensor_type.elem_type for k, v in inferred.items() if v.tensor_type.elem_type}
        except Exception:  # noqa: BLE001  an op whose inference needs shapes: fall back to its first input's type
            pass
    return {o: first for o in node.output if o and first}


class _Fixer:
    """The rewrites `unify_float_types` makes: shared Casts and restored fp32 weights, each made once."""

    def __init__(self, model, original):
        self.graph = model.graph
        self.inits = {i.name for i in model.graph.initializer}
        self.originals = {i.name: i for i in original.graph.initializer if i.data_type == TensorProto.FLOAT} \
            if original is not None else {}
        self.made, self.new_nodes, self.count = {}, [], 0

    def to(self, name: str, target: int) -> str:
        """The name of `name`'s value as `target`."""
        if (name, target) not in self.made:
            self.made[name, target] = self._make(name, target)
        self.count += 1
        return self.made[name, target]

    def _make(self, name: str, target: int) -> str:
        if target == TensorProto.FLOAT and name in self.originals:  # the weight's exact fp32 value
            init = onnx.TensorProto()
            init.CopyFrom(self.originals[name])
            init.name = f"{name}__fp32"
            self.graph.initializer.append(init)
            return init.name
        out = f"{name}__{TensorProto.DataType.Name(target).lower()}"
        self.new_nodes.append(onnx.helper.make_node("Cast", [name], [out], to=target, name=f"{out}/unify_cast"))
        return out

    def unify(self, node, group: list, types: dict) -> None:
        names = [node.input[i] for i in group]
        if len({types.get(n) for n in names} & set(_FLOATS)) < 2:
            return
        computed = [types.get(n) for n in names if n not in self.inits]
        target = TensorProto.FLOAT16 if TensorProto.FLOAT16 in computed else TensorProto.FLOAT
        for i, name in zip(group, names):
            if types.get(name) in _FLOATS and types[name] != target:
                node.input[i] = self.to(name, target)
                types[node.input[i]] = target


def unify_float_types(model: onnx.ModelProto, original: onnx.ModelProto | None = None) -> int:
    """Give every op's same-typed float inputs one type (module docstring); returns how many inputs changed.

    `original`: the fp32 graph the model was converted from, whose weights are restored where fp32 is kept."""
    opsets = {o.domain or "": o.version for o in model.opset_import}
    types = {v.name: v.type.tensor_type.elem_type for v in model.graph.input}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    fix = _Fixer(model, original)
    nodes = []
    for node in model.graph.node:
        schema = _schema(node, opsets)
        for group in _shared_type_inputs(node, schema) if schema is not None else ():
            fix.unify(node, group, types)
        nodes += fix.new_nodes + [node]
        fix.new_nodes = []
        types.update(_output_types(node, schema, types, opsets))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in nodes for i in n.input}
    kept = [i for i in model.graph.initializer if i.name in used]  # fp16 weights replaced by their fp32 originals
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return fix.count


def _isolate_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Copy in which every graph output is produced by its own Identity node.

    The converter keeps graph outputs fp32 by typing the output tensor itself; when that tensor also feeds other
    nodes (a present K/V feeds the attention), those nodes would see fp32 beside fp16. An Identity separates them.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    internal = {o.name: o.name + "__internal" for o in out.graph.output}
    for node in out.graph.node:
        node.input[:] = [internal.get(i, i) for i in node.input]
        node.output[:] = [internal.get(o, o) for o in node.output]
    for name, inner in internal.items():
        out.graph.node.append(onnx.helper.make_node("Identity", [inner], [name], name=f"{name}/output"))
    return out


#: precision `export` writes → (fp32 graph, its spec) → the graph at that precision
CONVERTERS = {"fp32": lambda model, spec=None: model, "fp16": to_fp16}
