"""What each TensorRT's ONNX parser reads, as data: one table per TensorRT version (`optables/<version>.json`,
taken from onnx-tensorrt's published operator list of that release; each file names its source commit), and the
checks `build` makes against them before any work.

    table_for("10.3.0.30") → the 10.3 table          generation_for(target="orin-nx-16gb") → ("opset20", ...)
    check_graph(onnx model, table) → problems          check_artifact(OUT, graphs, table) → raises with the fix

A newer TensorRT reads what an older one does (the parsers only add operators), so a version without a table of its
own is checked against the newest table at or below it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

TABLES_DIR = Path(__file__).resolve().parent / "optables"
#: ops of our plugin library: the parser maps them to the plugin (the library must be given at build time)
PLUGIN_OPS = ("VideoRope", "VideoRopeCache")
#: what a parser needs to read the opset-23 graph family natively
NATIVE_OPS = ("Attention", "RMSNormalization")


@dataclass(frozen=True)
class OpTable:
    version: str  # "10.3", "rtx-1.7"
    name: str
    opset: tuple  # (min, max) the release's list states
    operators: dict  # op type → "Y" / "N"
    source: dict

    def supports(self, op: str) -> bool:
        return self.operators.get(op) == "Y"

    @property
    def generation(self) -> str:
        """The graph family this parser reads at its best (export/generations.py)."""
        native = all(self.supports(op) for op in NATIVE_OPS) and self.opset[1] >= 23
        return "opset23" if native else "opset20"


@cache
def tables() -> dict:
    out = {}
    for path in sorted(TABLES_DIR.glob("*.json")):
        t = json.loads(path.read_text())
        out[t["tensorrt"]] = OpTable(t["tensorrt"], t["name"], tuple(t["opset"]), t["operators"], t["source"])
    return out


def _key(version: str) -> tuple:
    return tuple(int(p) for p in version.split(".")[:2])


def table_for(version: str) -> OpTable:
    """The table of a TensorRT version ("10.3", "10.3.0.30", "11.4") or of TensorRT-RTX ("rtx-1.7", "rtx-1.7.1")."""
    known = tables()
    rtx = version.startswith("rtx-")
    bare = version[4:] if rtx else version
    try:
        want = _key(bare)
    except ValueError:
        raise ValueError(f"TensorRT version {version!r}: expected a version such as 10.3, 11.1 or rtx-1.7") from None
    family = sorted((_key(v[4:] if rtx else v), v) for v in known if v.startswith("rtx-") == rtx)
    if len(want) == 1:  # a bare major ("11": any 11.x, as the presets name them): the oldest parser of it
        below = [v for k, v in family if k[0] == want[0]][:1]
        if below:
            return known[below[0]]
    below = [v for k, v in family if k <= want]
    if not below:
        raise ValueError(f"TensorRT {version} is older than every parser this project has a table for "
                         f"({', '.join(v for _, v in family)}); the oldest supported is {family[0][1]}")
    return known[below[-1]]


def generation_for(target: str | None = None, version: str | None = None) -> tuple:
    """(graph generation, the parser it is for) of a build target (its oldest TensorRT) or a bare version; with
    neither, the default generation, which every parser the presets name reads."""
    from videorope_trt.build.presets import get_preset
    from videorope_trt.export.generations import DEFAULT_GENERATION

    if target is None and version is None:
        return DEFAULT_GENERATION, "every TensorRT the presets name"
    if target is not None:
        table = preset_table(get_preset(target))
        return table.generation, f"{target} ({table.name})"
    table = table_for(version)
    return table.generation, table.name


def preset_table(preset) -> OpTable:
    """The table of the oldest TensorRT a preset names: what its graphs must parse on."""
    versions = [f"rtx-{v.rstrip('.')}" if preset.flavour == "rtx" else v for v in preset.trt_versions]
    return min((table_for(v) for v in versions), key=lambda t: _key(t.version.removeprefix("rtx-")))


def _ops(model) -> list:
    """(op type, where) of every node a parser imports: graph nodes, and the bodies of the local functions they call
    (parsers inline those); plugin nodes are ours, resolved by the plugin library."""
    functions = {(f.domain, f.name): f for f in model.functions}
    out, stack = [], [(n, "graph") for n in model.graph.node]
    while stack:
        node, where = stack.pop()
        if (node.domain, node.op_type) in functions:
            stack += [(n, f"function {node.op_type}") for n in functions[node.domain, node.op_type].node]
        elif node.op_type not in PLUGIN_OPS:
            out.append((node.op_type, node.domain or "ai.onnx", where))
    return out


def check_graph(model, table: OpTable) -> list:
    """What in an ONNX model (loaded without its weights) `table`'s parser cannot read, one line each."""
    problems = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and opset > table.opset[1]:
        problems.append(f"opset {opset} (its parser reads opsets {table.opset[0]} to {table.opset[1]})")
    missing = sorted({(op, domain) for op, domain, _ in _ops(model)
                      if domain not in ("ai.onnx",) or not table.supports(op)})
    problems += [f"operator {op}" + ("" if domain == "ai.onnx" else f" (domain {domain})") for op, domain in missing]
    return problems


def check_artifact(artifact, graphs: dict, table: OpTable) -> None:
    """Raise before any build work when a graph of `graphs` ({name: manifest entry}) has what `table`'s parser
    cannot read; the message names the operator, the graph, the TensorRT version and the export that fixes it."""
    import onnx

    lines = []
    for name, entry in graphs.items():
        model = onnx.load(str(Path(artifact) / entry["file"]), load_external_data=False)
        lines += [f"{name}: {p}" for p in check_graph(model, table)]
    if lines:
        raise ValueError(f"{table.name} cannot parse these graphs of {artifact}: " + "; ".join(lines) + ". Export "
                         f"for it: `videorope-trt export CKPT {artifact} --trt {table.version}` (or --target PRESET); "
                         f"its parser reads {table.generation} graphs")
