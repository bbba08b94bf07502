"""ONNX → TensorRT engines for a target preset, and the checks a reader makes before using them.

    artifact/manifest.json + vision.onnx + decoder.onnx
        → artifact/engines/<target>/{vision,decoder}.engine + engine.json (+ timing.cache)

One code path serves full TensorRT (10.x, 11.x) and TensorRT-RTX; `runtime.trt` holds their differences as data.
Networks are strongly typed: the ONNX decides precision (FP16 graph, or Q/DQ), no builder precision flags. The
optimization profiles come from the memory plan: the decoder gets a prefill profile (S up to the prefill chunk) and a
decode profile (S = 1), both attending up to the planned context over a cache of that many rows; the vision encoder
gets patches up to one frame chunk, one profile per range of slice lengths (`slice_ranges`). Symbolic dims are read
from the manifest's input specs, else from the ONNX inputs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from videorope_trt import trt as trtmod
from videorope_trt.artifact.atomic import write_atomic
from videorope_trt.artifact.engine_info import MemoryPlan, sha256, write_engine_info
from videorope_trt.artifact.manifest import read_manifest
from videorope_trt.artifact.model_config import ModelConfig
from videorope_trt.artifact.precisions import PRECISIONS
from videorope_trt.build.plan import PlanRequest, plan_memory, slice_ranges
from videorope_trt.build.presets import get_preset
from videorope_trt.plugins.build import PLUGIN_LIB
from videorope_trt.rope.contract import CACHE_OP_NAME, OP_NAME, PLUGIN_NAMESPACE, PLUGIN_VERSION

#: Symbolic dim names the exporter may use, by role. Add a name here when an exporter uses a new one.
DIM_ROLES = {
    **dict.fromkeys(("batch", "B", "batch_size"), "batch"),
    **dict.fromkeys(("seq", "S", "sequence", "sequence_length", "seq_len"), "sequence"),
    **dict.fromkeys(("capacity", "C", "cache_length"), "capacity"),
    **dict.fromkeys(("total", "T", "total_sequence_length", "total_length", "total_len"), "total"),
    **dict.fromkeys(("patches", "N", "num_patches", "n_patches"), "patches"),
    **dict.fromkeys(("slice_len", "slice_length", "patches_per_slice"), "slice"),
    **dict.fromkeys(("merged", "M", "num_merged", "merged_tokens", "n_merged"), "merged"),
}


def _prefill(p: MemoryPlan) -> dict:
    c, n = p.prefill_chunk, p.max_context
    return {"batch": (1, p.batch, p.batch), "sequence": (1, c, c), "total": (1, c, n), "capacity": (1, n, n)}


def _decode(p: MemoryPlan) -> dict:
    n = p.max_context
    return {"batch": (1, p.batch, p.batch), "sequence": (1, 1, 1), "total": (1, n // 2 + 1, n), "capacity": (1, n, n)}


def _vision(p: MemoryPlan) -> list:
    """Whole slices of one grid per call, up to the chunk's patches: one profile per range of slice lengths from one
    merge block up to the chunk (a slice as long as the whole chunk, an image larger than the frames, still runs),
    the planned frame size's range first and tuned for its slices."""
    n, per_slice = p.patches_per_chunk, p.patches_per_slice
    m2 = per_slice // p.tokens_per_slice  # patches merged into one token
    profiles = []
    for i, (lo, hi) in enumerate(slice_ranges(m2, per_slice, n)):
        opt = per_slice if i == 0 else hi  # the first range holds the planned slices
        # the graph views the patches as (slices, L): TensorRT refuses a profile whose opt patches are not whole
        # slices of the opt length, so the opt call is the most whole slices of that length a chunk holds
        full = n // opt * opt
        profiles.append((f"vision:{lo}-{hi}", {"patches": (lo, full, n), "slice": (lo, opt, hi),
                                               "merged": (lo // m2, full // m2, n // m2), "batch": (1, 1, 1)}))
    return profiles


def _decoder(p: MemoryPlan) -> list:
    return [("prefill", _prefill(p)), ("decode", _decode(p))]


#: Graph role → [(profile name, role ranges (min, opt, max))] computed from the plan, in the engine's profile order.
GRAPH_PROFILES = {"decoder": _decoder, "vision": _vision}


def graph_role(graph: str) -> str:
    """A graph's role, the part of its name before the first '.': "decoder.int8-sq" is a decoder."""
    return graph.split(".", 1)[0]


@dataclass(frozen=True)
class BuildRequest:
    target: str
    plan: PlanRequest = field(default_factory=PlanRequest)
    graphs: tuple = ("vision", "decoder")
    plugin_library: str | None = None  # default: <artifact>/plugins/libvideorope_trt_plugins.so when needed
    compute_capabilities: tuple | None = None  # TensorRT-RTX targets; default: the preset's
    verbose: bool = False


def manifest_model(manifest: dict) -> ModelConfig:
    """The model's dims from the manifest's config (`model.config`, `model_config` or `config`)."""
    model = manifest.get("model") if isinstance(manifest.get("model"), dict) else {}
    for cfg in (model.get("config"), manifest.get("model_config"), manifest.get("config")):
        if isinstance(cfg, dict):
            return ModelConfig.from_config(cfg, name=model.get("name") or manifest.get("name", "checkpoint"))
    raise ValueError("manifest.json has no model config (looked for model.config, model_config, config); keys "
                     f"{sorted(manifest)}")


def graph_entry(manifest: dict, graph: str, artifact: Path) -> dict:
    """The manifest's entry for a graph: {"file", "inputs": [{"name", "shape"}], "precision"}, its ONNX file and
    weights checked to be there (a missing weights file otherwise surfaces as a parser error that names neither)."""
    from videorope_trt.artifact.manifest import graph_file

    graph_file(artifact, manifest, graph)
    entry = dict(manifest["graphs"][graph])
    entry.setdefault("file", f"{graph}.onnx")
    return entry


def onnx_inputs(onnx_path: Path) -> list:
    """[{"name", "shape"}] of the graph inputs, symbolic dims as their names (initializers excluded)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    out = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = [d.dim_param if d.dim_param else d.dim_value for d in vi.type.tensor_type.shape.dim]
        out.append({"name": vi.name, "shape": dims})
    return out


def plugin_ops(onnx_path: Path) -> set:
    """The plugin library's ops (VideoRope, VideoRopeCache) a graph holds."""
    import onnx

    from videorope_trt.build.optables import PLUGIN_OPS

    model = onnx.load(str(onnx_path), load_external_data=False)
    nodes = list(model.graph.node) + [n for f in model.functions for n in f.node]
    return {n.op_type for n in nodes if n.op_type in PLUGIN_OPS}


def profile_shapes(inputs: list, graph: str, plan: MemoryPlan) -> list:
    """[(profile name, {input: (min, opt, max)})] for a graph's inputs under the plan (profiles by its role)."""
    if graph_role(graph) not in GRAPH_PROFILES:
        raise ValueError(f"no optimization profiles for graph {graph!r}; expected a name whose role (before the first "
                         f"'.') is one of {sorted(GRAPH_PROFILES)}")
    result = []
    for name, ranges in GRAPH_PROFILES[graph_role(graph)](plan):
        shapes = {}
        for spec in inputs:
            dims = spec["shape"]
            if all(isinstance(d, int) and d > 0 for d in dims):
                continue  # static input: no profile entry needed
            shapes[spec["name"]] = tuple(zip(*(_dim_range(d, spec["name"], ranges) for d in dims)))
        result.append((name, shapes))
    return result


def _dim_range(dim, input_name: str, ranges: dict) -> tuple:
    if isinstance(dim, int) and dim > 0:
        return (dim, dim, dim)
    role = DIM_ROLES.get(dim)
    if role is None:
        raise ValueError(f"input {input_name}: symbolic dim {dim!r} has no known role; expected one of "
                         f"{sorted(DIM_ROLES)}")
    if role not in ranges:
        raise ValueError(f"input {input_name}: dim {dim!r} ({role}) has no range in this profile; it has "
                         f"{sorted(ranges)}")
    return ranges[role]


def _target_ccs(preset, request: BuildRequest) -> tuple:
    if request.compute_capabilities:
        return tuple(request.compute_capabilities)
    return preset.aot_compute_capabilities or (preset.compute_capability,)


def _check_fp8_ccs(precisions: list, ccs: tuple) -> None:
    """FP8 GEMMs exist from compute capability 8.9: an ahead-of-time build of an FP8 graph for an older one fails
    deep in TensorRT-RTX's compiler ("HW-specific datatypes: fp8_e4m3"), so say it first, with what would build."""
    old = [cc for cc in ccs if tuple(int(v) for v in cc.split(".")) < (8, 9)]
    if old and any(PRECISIONS[p].needs_fp8 for p in precisions if p in PRECISIONS):
        newer = [cc for cc in ccs if cc not in old] or ["8.9", "12.0"]
        raise ValueError(f"an fp8 graph cannot be built for compute capability {' '.join(old)} (FP8 needs 8.9 or "
                         f"newer); pass --compute-capabilities {' '.join(newer)}")


def _check_builder_matches(trt, preset, flavour) -> dict | None:
    """Full TensorRT builds for the GPU it runs on: refuse a machine that is not the target."""
    running = trtmod.version(trt)
    if not trtmod.version_matches(running, preset.trt_versions):
        raise ValueError(f"target {preset.name} expects {flavour.name} {' or '.join(preset.trt_versions)}.x, this "
                         f"machine runs {running}; build on (or for) the target device with its TensorRT")
    gpu = trtmod.current_gpu()
    if flavour.aot_compute_capabilities:
        return gpu  # TensorRT-RTX builds ahead of time for explicit compute capabilities
    if gpu is None:
        raise ValueError(f"full TensorRT builds on the GPU that runs the engine, and this machine has none; build on "
                         f"the {preset.name} device (or use the `rtx` target for an ahead-of-time TensorRT-RTX build)")
    if gpu["compute_capability"] != preset.compute_capability:
        raise ValueError(f"target {preset.name} is compute capability {preset.compute_capability}, this GPU "
                         f"({gpu['name']}) is {gpu['compute_capability']}; build on the target device")
    return gpu


def _configure(trt, builder, flavour, preset, ccs, timing_cache: Path | None):
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, preset.workspace_bytes)
    if flavour.aot_compute_capabilities:
        config.num_compute_capabilities = len(ccs)
        for i, cc in enumerate(ccs):
            config.set_compute_capability(trtmod.compute_capability_enum(trt, cc), i)
    cache = None
    if flavour.timing_cache and timing_cache is not None:
        data = timing_cache.read_bytes() if timing_cache.is_file() else b""
        cache = config.create_timing_cache(data)
        config.set_timing_cache(cache, ignore_mismatch=False)
    return config, cache


def set_decomposable_attentions(trt, network) -> int:
    """Let TensorRT decompose the parser's attention layers (ONNX `Attention`) where it has no fused kernel (fp32,
    some masks and shapes); without it those builds fail. Polygraphy's `--decomposable-attentions` does the same.
    Returns how many layers were marked (TensorRT before 10.14 has no attention layer: 0)."""
    kind = getattr(trt.LayerType, "ATTENTION_INPUT", None)
    marked = 0
    for i in range(network.num_layers if kind is not None else 0):
        layer = network.get_layer(i)
        if layer.type == kind:
            # get_layer returns the base class: narrow it to reach .attention
            layer.__class__ = trt.IAttentionInputLayer
            layer.attention.decomposable = True
            marked += 1
    return marked


def keep_caches_inside(trt, network, config, aliases: dict) -> int:
    """The cache outputs (`aliases`: output → the input it updates) stop being network outputs: attention reads
    them inside the engine, and the plugin that makes them writes its cache inputs in place (aliased plugin I/O,
    turned on here), so the caller binds one buffer per cache, as an input only. Returns how many were unmarked."""
    outputs = [network.get_output(i) for i in range(network.num_outputs)]
    cached = [t for t in outputs if t.name in aliases]
    if cached:
        trtmod.enable_aliased_plugin_io(trt, config)
    for tensor in cached:
        network.unmark_output(tensor)
    return len(cached)


def build_engine(trt, onnx_path: Path, profiles: list, preset, flavour, ccs, timing_cache: Path | None,
                 verbose: bool = False, aliases: dict | None = None) -> bytes:
    """The serialized engine of one ONNX graph (strongly typed), with one optimization profile per entry;
    `aliases` names the cache outputs that update their inputs in place (the decoder's)."""
    logger = trtmod.make_logger(trt, verbose)
    builder = trt.Builder(logger)
    network = builder.create_network(trtmod.strongly_typed_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f"TensorRT {trtmod.version(trt)} could not parse {onnx_path}: {errors}")
    set_decomposable_attentions(trt, network)
    config, cache = _configure(trt, builder, flavour, preset, ccs, timing_cache)
    keep_caches_inside(trt, network, config, aliases or {})
    names = {network.get_input(i).name for i in range(network.num_inputs)}
    for _, shapes in profiles:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in shapes.items():
            if name in names:  # an input the parser folded away needs no shape
                profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError(f"TensorRT {trtmod.version(trt)} failed to build {onnx_path} "
                           "(run with --verbose for the log)")
    if cache is not None:
        write_atomic(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(engine)


def _plugin_for(artifact: Path, request: BuildRequest, entries: dict) -> Path | None:
    """The plugin library the graphs need (None: they hold no plugin op). A graph with caches to update (its
    manifest entry's "aliases") must hold VideoRopeCache: engines keep one cache per layer, written in place by it."""
    ops = {g: plugin_ops(artifact / e["file"]) for g, e in entries.items()}
    for graph, found in ops.items():
        if entries[graph].get("aliases") and CACHE_OP_NAME not in found:
            form = entries[graph].get("rotary_form", "decomposed")
            raise ValueError(f"{graph}: engines run the decoder in the plugin form (its {CACHE_OP_NAME} plugin writes "
                             f"the KV cache in place); this graph has the {form} form, which returns a new cache per "
                             "call. Export with --rotary-form plugin")
    if not any(ops.values()):
        return None
    path = Path(request.plugin_library) if request.plugin_library else artifact / "plugins" / PLUGIN_LIB
    if not path.is_file():
        raise FileNotFoundError(f"the ONNX has {', '.join(sorted(set().union(*ops.values())))} nodes, which need the "
                                f"plugin library, and {path} does not exist; build it with `videorope-trt build-plugin "
                                "--out <artifact>/plugins` or pass --plugin")
    return path


def _parser_table(preset, flavour):
    """The operator table the build is checked against: the installed TensorRT's where there is one, else the
    oldest the target names (what the graphs must parse on there)."""
    from videorope_trt.build.optables import preset_table, table_for

    if trtmod.available(flavour.name):
        running = trtmod.version(trtmod.import_trt(flavour.name))
        return table_for(f"rtx-{running}" if flavour.name == "rtx" else running)
    return preset_table(preset)


def _checked(artifact: Path, request: BuildRequest):
    """Everything a build can be refused for, found before any work: (preset, flavour, manifest entries, plan,
    plugin library or None, compute capabilities)."""
    from videorope_trt.build.optables import check_artifact

    if request.plan.runtime != "tensorrt":  # engine.json's plan sizes the TensorRT runtime's KV cache
        raise ValueError(f"build: the memory plan must be for the tensorrt runtime (engines are what it runs); "
                         f"got runtime={request.plan.runtime!r}")
    preset = get_preset(request.target)
    flavour = trtmod.get_flavour(preset.flavour)
    manifest = read_manifest(artifact)
    entries = {g: graph_entry(manifest, g, artifact) for g in request.graphs}
    for e in entries.values():  # the ONNX decides precision; it must be one the target runs
        preset.check_precision(e.get("precision", request.plan.precision))
    check_artifact(artifact, entries, _parser_table(preset, flavour))
    plan = plan_memory(manifest_model(manifest), preset, request.plan)
    ccs = _target_ccs(preset, request)
    if flavour.aot_compute_capabilities:
        _check_fp8_ccs([e.get("precision", request.plan.precision) for e in entries.values()], ccs)
    plugin = _plugin_for(artifact, request, entries)
    return preset, flavour, entries, plan, plugin, ccs


def build_engines(artifact, request: BuildRequest) -> dict:
    """Build every requested graph of an artifact directory for a target; returns what engine.json records.

    The engines are built into a temporary folder that replaces engines/<target> whole when every one is built: a
    failed build leaves the previous build as it was."""
    from videorope_trt.artifact.atomic import atomic_dir

    artifact = Path(artifact)
    preset, flavour, entries, plan, plugin, ccs = _checked(artifact, request)
    trt = trtmod.import_trt(flavour.name)
    gpu = _check_builder_matches(trt, preset, flavour)
    if plugin is not None:
        if flavour.name == "rtx":
            trtmod.ensure_rtx_parser_library(trt)
        trtmod.load_plugin_library(trt, plugin, (OP_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE))
    out = artifact / "engines" / preset.name
    with atomic_dir(out) as tmp:
        cache = tmp / "timing.cache" if flavour.timing_cache else None
        if cache is not None and (out / cache.name).is_file():  # the tactics timed before stay known
            cache.write_bytes((out / cache.name).read_bytes())
        engines = {graph: _build_graph(trt, artifact, graph, entry, plan, preset, flavour, ccs, cache, request, tmp)
                   for graph, entry in entries.items()}
        info = write_engine_info(tmp, {
            "target": preset.name, "flavour": flavour.name,
            "tensorrt_version": trtmod.version(trt), "gpu": gpu, "compute_capabilities": list(ccs),
            "precision": request.plan.precision, "engines": engines, "plan": plan.to_dict(),
            "plugin_library": None if plugin is None else {"path": str(plugin.resolve()), "sha256": sha256(plugin)},
            "timing_cache": None if cache is None else cache.name,
        })
    return info


def _build_graph(trt, artifact, graph, entry, plan, preset, flavour, ccs, cache, request, out: Path) -> dict:
    onnx_path = artifact / entry["file"]
    inputs = entry.get("inputs") or onnx_inputs(onnx_path)
    profiles = profile_shapes(inputs, graph, plan)
    start = time.perf_counter()
    data = build_engine(trt, onnx_path, profiles, preset, flavour, ccs, cache, request.verbose, entry.get("aliases"))
    write_atomic(out / f"{graph}.engine", data)
    return {"file": f"{graph}.engine", "onnx": entry["file"], "onnx_sha256": sha256(onnx_path),
            "precision": entry.get("precision", request.plan.precision), "bytes": len(data),
            "build_seconds": round(time.perf_counter() - start, 3),
            "profiles": [{"name": n, "shapes": {k: [list(s) for s in v] for k, v in sh.items()}} for n, sh in profiles]}
