"""Build a TensorRT-RTX engine from an ONNX file with the VideoRope plugin library, ahead of time (no GPU needed).

Run as its own process (the tests do): TensorRT-RTX's ONNX parser dlopens `libtensorrt_rtx.so` by its bare name
while the wheel ships `libtensorrt_rtx.so.1`, and a missing file aborts the whole process the moment a plugin is
created; `rtx_env()` makes the symlink and puts it on LD_LIBRARY_PATH, which only counts at process start.

    python tests/plugins/rtx_build.py PLUGIN_LIB MODEL.onnx REPORT.json [--cc SM86,SM120] [--profiles JSON]
        [--aliased-io]

Writes a JSON report: creator fields as the registry sees them (VideoRope's and VideoRopeCache's), the network's
layers and outputs, whether aliased plugin I/O was on, the engine size.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from videorope_trt.artifact.atomic import write_atomic


def rtx_env(link_dir: Path) -> dict:
    """Environment for a child process in which TensorRT-RTX's parser can open `libtensorrt_rtx.so`."""
    import importlib.util

    spec = importlib.util.find_spec("tensorrt_rtx_libs")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("tensorrt_rtx_libs is not installed (pip install -r requirements/rtx.txt)")
    libdir = Path(list(spec.submodule_search_locations)[0])
    link_dir.mkdir(parents=True, exist_ok=True)
    link = link_dir / "libtensorrt_rtx.so"
    if not link.exists():
        link.symlink_to(libdir / "libtensorrt_rtx.so.1")
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(link_dir), str(libdir), env.get("LD_LIBRARY_PATH")) if p)
    return env


def _fields(trt, registry, name="VideoRope") -> dict:
    creator = registry.get_creator(name, "1", "videorope")
    if creator is None:
        return {}
    names = {trt.PluginFieldType.INT32: "INT32", trt.PluginFieldType.FLOAT32: "FLOAT32"}
    return {f.name: names.get(f.type, str(f.type)) for f in creator.field_names}


def build(plugin: str, model: str, ccs: list, profiles: dict, aliased_io: bool = False) -> dict:
    import tensorrt_rtx_bindings as trt

    from videorope_trt.trt import enable_aliased_plugin_io

    logger = trt.Logger(trt.Logger.WARNING)
    registry = trt.get_plugin_registry()
    handle = registry.load_library(str(Path(plugin).resolve()))  # a path with a '/'
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(model)
    errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
    report = {"loaded": handle is not None, "fields": _fields(trt, registry), "parsed": bool(ok), "errors": errors,
              "cache_fields": _fields(trt, registry, "VideoRopeCache")}
    if not ok:
        return report
    report["layers"] = [str(network.get_layer(i).type) for i in range(network.num_layers)]
    outputs = [network.get_output(i) for i in range(network.num_outputs)]
    report["outputs"] = [(o.name, str(o.dtype)) for o in outputs]
    config = builder.create_builder_config()
    if aliased_io:
        enable_aliased_plugin_io(trt, config)
    report["aliased_io"] = bool(config.get_preview_feature(trt.PreviewFeature.ALIASED_PLUGIN_IO_10_03))
    config.num_compute_capabilities = len(ccs)
    for i, cc in enumerate(ccs):
        config.set_compute_capability(getattr(trt.ComputeCapability, cc), i)
    if profiles:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in profiles.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    report["engine_bytes"] = 0 if engine is None else engine.nbytes
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("plugin")
    ap.add_argument("model")
    ap.add_argument("report")
    ap.add_argument("--cc", default="SM86,SM120", help="ComputeCapability names")
    ap.add_argument("--profiles", default="{}", help='JSON {input: [min, opt, max]} shapes')
    ap.add_argument("--aliased-io", action="store_true", help="turn on PreviewFeature.ALIASED_PLUGIN_IO_10_03")
    args = ap.parse_args(argv)
    report = build(args.plugin, args.model, args.cc.split(","), json.loads(args.profiles), args.aliased_io)
    write_atomic(args.report, json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
