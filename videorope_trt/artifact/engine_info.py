"""engine.json: what `build` wrote into `engines/<target>/`, and the checks a reader makes before using it.

    engines/<target>/{vision,decoder}.engine + engine.json (TensorRT flavour and version, compute capabilities,
    the engines with their ONNX sha256 and profiles, the memory plan, the plugin library)

The memory plan (`MemoryPlan`) is part of the record: the runtime sizes its KV cache and its calls from it. The
checks take the running TensorRT version and GPU as arguments, so this module imports neither TensorRT nor torch.
stdlib only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

from videorope_trt.artifact.atomic import read_json, write_atomic

ENGINE_FORMAT = 1
NAME = "engine.json"
GiB = 1 << 30


class EngineMismatch(ValueError):
    """An engine directory does not belong to this TensorRT / GPU; the message says what differs."""


@dataclass(frozen=True)
class MemoryPlan:
    """All byte counts are for the whole batch. JSON-friendly: plain ints, floats and strings."""

    model: str
    target: str
    precision: str
    kv_precision: str
    vision_precision: str
    batch: int
    memory_bytes: int
    reserved_bytes: int
    headroom_bytes: int
    budget_bytes: int
    decoder_weight_bytes: int
    vision_weight_bytes: int
    embedding_bytes: int
    overhead_bytes: int
    workspace_bytes: int
    decoder_activation_bytes: int
    vision_activation_bytes: int
    kv_bytes_per_token: int
    per_token_bytes: int
    capacity_context: int
    capacity_frames: int
    max_context: int
    max_frames: int
    prefill_chunk: int
    frames_per_chunk: int
    patches_per_chunk: int
    tokens_per_slice: int
    frame_size: tuple
    text_reserve: int
    #: patches in one temporal slice at `frame_size` (tokens_per_slice × merge²); 0 in a plan written before it was
    #: recorded (its engines take the vision graph of an older manifest, which readers refuse)
    patches_per_slice: int = 0
    runtime: str = "tensorrt"  # plans written before runtimes were told apart were TensorRT's
    kv_copies: int = 1  # KV caches the runtime keeps alive at once
    kv_rows_align: int = 1  # the cache's rows: the context rounded up to this

    @property
    def fixed_bytes(self) -> int:
        return (self.decoder_weight_bytes + self.vision_weight_bytes + self.embedding_bytes + self.overhead_bytes
                + self.workspace_bytes + self.decoder_activation_bytes + self.vision_activation_bytes)

    @property
    def kv_rows(self) -> int:
        return -(-self.max_context // self.kv_rows_align) * self.kv_rows_align

    @property
    def kv_cache_bytes(self) -> int:
        """The KV caches the runtime allocates: every layer's K and V for `max_context` tokens (its rows rounded as
        the runtime rounds them), times the copies it keeps."""
        return self.kv_copies * self.kv_bytes_per_token * self.kv_rows

    @property
    def total_bytes(self) -> int:
        per_token_rest = self.per_token_bytes - self.kv_copies * self.kv_bytes_per_token  # the embeddings row
        return self.fixed_bytes + self.kv_cache_bytes + per_token_rest * self.max_context

    def to_dict(self) -> dict:
        d = asdict(self)
        d["frame_size"] = list(self.frame_size)
        d.update(fixed_bytes=self.fixed_bytes, kv_cache_bytes=self.kv_cache_bytes, total_bytes=self.total_bytes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "MemoryPlan":
        names = {f.name for f in fields(cls)}
        missing = {f.name for f in fields(cls) if f.default is MISSING} - set(d)
        if missing:
            raise ValueError(f"memory plan: missing fields {sorted(missing)}")
        kw = {k: d[k] for k in names & set(d)}
        kw["frame_size"] = tuple(kw["frame_size"])
        return cls(**kw)

    def table(self) -> str:
        """A table a person reads: one line per cost, then what fits."""
        g = lambda b: f"{b / GiB:9.2f} GiB"
        rows = [
            ("memory", g(self.memory_bytes)),
            ("reserved (OS, carve-outs)", g(self.reserved_bytes)),
            ("headroom", g(self.headroom_bytes)),
            ("budget", g(self.budget_bytes)),
            (f"decoder weights ({self.precision})", g(self.decoder_weight_bytes)),
            (f"vision weights ({self.vision_precision})", g(self.vision_weight_bytes)),
            ("embedding table", g(self.embedding_bytes)),
            ("CUDA + TensorRT overhead", g(self.overhead_bytes)),
            ("workspace", g(self.workspace_bytes)),
            (f"decoder activations ({self.prefill_chunk}-token chunk)", g(self.decoder_activation_bytes)),
            (f"vision activations ({self.patches_per_chunk} patches)", g(self.vision_activation_bytes)),
            (f"KV cache per token ({self.kv_precision}, {self.kv_copies} "
             f"cop{'y' if self.kv_copies == 1 else 'ies'})",
             f"{self.kv_copies * self.kv_bytes_per_token / 1024:9.2f} KiB"),
            ("per token (KV + embeddings)", f"{self.per_token_bytes / 1024:9.2f} KiB"),
            ("largest context / frames", f"{self.capacity_context} tokens / {self.capacity_frames} frames"),
            ("planned context / frames", f"{self.max_context} tokens / {self.max_frames} frames"),
            (f"KV cache at {self.max_context} tokens", g(self.kv_cache_bytes)),
            ("planned total", g(self.total_bytes)),
        ]
        width = max(len(k) for k, _ in rows)
        head = (f"{self.model} on {self.target} ({self.runtime} runtime): batch {self.batch}, "
                f"frames {self.frame_size[0]}x{self.frame_size[1]} px = {self.tokens_per_slice} tokens per temporal "
                "slice")
        return "\n".join([head] + [f"  {k:<{width}}  {v}" for k, v in rows])


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_engine_info(engine_dir, info: dict) -> dict:
    """Write engine.json (format version first); returns what was written."""
    info = {"format_version": ENGINE_FORMAT, **info}
    write_atomic(Path(engine_dir) / NAME, json.dumps(info, indent=2) + "\n")
    return info


def read_engine_info(engine_dir) -> dict:
    path = Path(engine_dir) / NAME
    info = read_json(path, "expected a directory written by `videorope-trt build`")
    if info.get("format_version") != ENGINE_FORMAT:
        raise EngineMismatch(f"{path}: format_version {info.get('format_version')!r}, this reader expects "
                             f"{ENGINE_FORMAT}; rebuild")
    return info


def find_engine_dir(artifact, target=None) -> Path:
    """engines/<target> under the artifact directory; the only one there when no target is named."""
    root = Path(artifact) / "engines"
    if target:
        return root / target
    found = sorted(p for p in root.glob("*") if (p / NAME).is_file()) if root.is_dir() else []
    if len(found) != 1:
        raise FileNotFoundError(f"expected one engine directory under {root}, found {[p.name for p in found]}; "
                                "pass --target or run `videorope-trt build`")
    return found[0]


def check_engine_dir(engine_dir, *, running_version: str, gpu: dict | None, plugin_library=None) -> dict:
    """engine.json of a directory, checked against the running TensorRT version and GPU ({"name",
    "compute_capability"} or None); `plugin_library` is compared by sha256 with the one the engines were built with.
    EngineMismatch says what differs."""
    info = read_engine_info(engine_dir)
    rebuild = f"rebuild with `videorope-trt build <artifact> --target {info['target']}` on this machine"
    if running_version != info["tensorrt_version"]:
        raise EngineMismatch(f"{engine_dir}: engines were built with {info['flavour']} {info['tensorrt_version']}, "
                             f"this machine runs {running_version}; {rebuild}")
    ccs = info["compute_capabilities"]
    if gpu is None:
        raise EngineMismatch(f"{engine_dir}: engines run on compute capability {' or '.join(ccs)}, and this machine "
                             "has no CUDA GPU")
    if gpu["compute_capability"] not in ccs:
        raise EngineMismatch(f"{engine_dir}: engines were built for compute capability {' or '.join(ccs)} "
                             f"(target {info['target']}), this GPU ({gpu['name']}) is {gpu['compute_capability']}; "
                             f"{rebuild}")
    built = info.get("plugin_library")
    if built and plugin_library is not None and sha256(plugin_library) != built["sha256"]:
        raise EngineMismatch(f"{engine_dir}: plugin library {plugin_library} differs from the one the engines were "
                             f"built with ({built['path']}, sha256 {built['sha256'][:12]}…); {rebuild}")
    return info


def select_engines(info: dict, engine_dir, decoder: str | None = None) -> dict:
    """{"vision": graph, "decoder": graph}: the engines engine.json lists for each role; `decoder` names one when
    the build holds several (e.g. "decoder" and "decoder.int8-sq"). An engine file engine.json does not list is
    never picked, whatever lies in the folder."""
    built = info.get("engines") or {}
    out = {}
    for role, asked in (("vision", None), ("decoder", decoder)):
        names = [g for g in built if g.split(".", 1)[0] == role]
        if asked is not None:
            if asked not in built:
                raise ValueError(f"{engine_dir}: no {asked!r} engine; engine.json lists {', '.join(built) or 'none'}")
            names = [asked]
        if len(names) != 1:
            raise ValueError(f"{engine_dir}: engine.json lists {len(names)} {role} engines "
                             f"({', '.join(names) or 'none'}); name the one to run (--decoder GRAPH) or build it "
                             "(videorope-trt build)")
        out[role] = names[0]
    return out


def check_engine_sources(info: dict, engine_dir, artifact, graphs) -> None:
    """Each engine of `graphs` was built from the ONNX file now in the artifact (its sha256 as engine.json records)."""
    for graph in graphs:
        entry = info["engines"][graph]
        onnx_path = Path(artifact) / entry["onnx"]
        if not onnx_path.is_file() or sha256(onnx_path) != entry["onnx_sha256"]:
            raise EngineMismatch(f"{engine_dir}/{entry['file']} was built from another {entry['onnx']} than the one in "
                                 f"{artifact} (exported again since?); rebuild with `videorope-trt build {artifact} "
                                 f"--target {info['target']}`")


def engine_plan(engine_dir) -> MemoryPlan:
    """The memory plan the engines were built for: the runtime sizes its KV cache from `max_context`."""
    return MemoryPlan.from_dict(read_engine_info(engine_dir)["plan"])
