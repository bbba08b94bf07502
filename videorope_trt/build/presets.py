"""Build targets as data: what a GPU offers (memory, compute capability, TensorRT flavour and versions,
precisions from `artifact.precisions`) and the budgets the memory plan and the engine builder start from.

Memory figures are the module's total; `reserved_bytes` is what the OS, the display stack and carve-outs keep on
Jetson's unified memory (shared by CPU and GPU), `overhead_bytes` what the CUDA context and TensorRT's runtime
libraries take. Jetson reservations assume a headless system (multi-user.target; the desktop takes about 1 GiB
more) and include the firmware carve-outs. Sources are in docs/deployment.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from videorope_trt.artifact.precisions import PRECISIONS, Precision

GiB = 1 << 30
MiB = 1 << 20


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    flavour: str  # "tensorrt" (full TensorRT 10.x / 11.x) or "rtx" (TensorRT-RTX)
    trt_versions: tuple  # accepted TensorRT version prefixes ("10.3" matches 10.3.0.30)
    compute_capability: str  # of the GPU the engine runs on
    memory_bytes: int
    precisions: tuple
    workspace_bytes: int  # builder workspace pool limit; also kept free at run time
    default_context: int  # the context budget a build uses unless told otherwise
    default_frames: int
    prefill_chunk: int  # tokens per prefill step (the prefill profile's largest S)
    frames_per_chunk: int  # video frames per vision-encoder call
    reserved_bytes: int = 0
    overhead_bytes: int = 1 * GiB
    headroom: float = 0.10  # fraction of usable memory never planned
    unified_memory: bool = False
    #: TensorRT-RTX builds ahead of time for these compute capabilities (no GPU needed at build time).
    aot_compute_capabilities: tuple = ()
    notes: str = ""

    def __post_init__(self):
        unknown = [p for p in self.precisions if p not in PRECISIONS]
        if unknown:
            raise ValueError(f"preset {self.name}: unknown precisions {unknown}; known: {sorted(PRECISIONS)}")
        if not 0 <= self.headroom < 1:
            raise ValueError(f"preset {self.name}: headroom must be in [0, 1), got {self.headroom}")

    def check_precision(self, precision: str) -> Precision:
        """The precision, or a ValueError naming what this target offers."""
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; expected one of {sorted(PRECISIONS)}")
        if precision not in self.precisions:
            why = ""
            if PRECISIONS[precision].needs_fp8:
                why = " (no FP8 tensor cores on compute capability " + self.compute_capability + ")"
            raise ValueError(
                f"target {self.name} does not support precision {precision!r}{why}; "
                f"it supports {', '.join(self.precisions)}"
            )
        return PRECISIONS[precision]



_DATACENTER = ("fp32", "fp16", "int8-wo", "int8-sq", "fp8")
_ORIN = ("fp32", "fp16", "int8-wo", "int8-sq")
_ORIN_TRT = ("10.3", "10.16")  # JetPack 6.2 and 7.2 (TensorRT 11.4.1 supports AGX Orin only)

PRESETS = {p.name: p for p in [
    Preset("h100", "NVIDIA H100 80GB (Hopper, sm_90), TensorRT 11", "tensorrt", ("11",), "9.0",
           81559 * MiB, _DATACENTER, 8 * GiB, 32768, 240, 4096, 16, overhead_bytes=2 * GiB),
    Preset("h200", "NVIDIA H200 141GB (Hopper, sm_90), TensorRT 11", "tensorrt", ("11",), "9.0",
           143771 * MiB, _DATACENTER, 8 * GiB, 32768, 240, 4096, 16, overhead_bytes=2 * GiB),
    Preset("agx-orin-64gb", "Jetson AGX Orin 64GB (sm_87), JetPack 6.2 / TensorRT 10.3", "tensorrt",
           _ORIN_TRT + ("11.4",), "8.7", 64 * GiB, _ORIN, 2 * GiB, 32768, 240, 2048, 8,
           reserved_bytes=2560 * MiB, unified_memory=True),
    Preset("orin-nx-16gb", "Jetson Orin NX 16GB (sm_87), JetPack 6.2 / TensorRT 10.3", "tensorrt", _ORIN_TRT,
           "8.7", 16 * GiB, _ORIN, 1 * GiB, 16384, 120, 1024, 4, reserved_bytes=1792 * MiB, unified_memory=True),
    Preset("orin-nano-8gb", "Jetson Orin Nano 8GB (sm_87), JetPack 6.2 / TensorRT 10.3", "tensorrt", _ORIN_TRT,
           "8.7", 8 * GiB, _ORIN, 512 * MiB, 4096, 24, 512, 4, reserved_bytes=1792 * MiB,
           overhead_bytes=768 * MiB, unified_memory=True),
    Preset("thor", "Jetson AGX Thor 128GB (Blackwell, sm_110), JetPack 7.0 / TensorRT 10.13", "tensorrt",
           ("10.13", "10.16", "11.4"), "11.0", 128 * GiB, _DATACENTER, 4 * GiB, 32768, 240, 4096, 16,
           reserved_bytes=4 * GiB, unified_memory=True),
    Preset("rtx", "GeForce/RTX GPU with 24GB through TensorRT-RTX (engines built ahead of time)", "rtx",
           ("1.",), "8.9", 24 * GiB, ("fp32", "fp16", "int8-wo", "fp8"), 2 * GiB, 16384, 120, 2048, 8,
           aot_compute_capabilities=("8.0", "8.6", "8.9", "12.0"),
           notes="INT8 is weight-only in TensorRT-RTX; FP8 runs on compute capability 8.9 and newer"),
]}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown target {name!r}; expected one of {', '.join(PRESETS)}") from None


def device_preset(name: str, memory_bytes: int, compute_capability: str) -> Preset:
    """A preset for a GPU no preset names (the one a PyTorch run finds itself on): datacenter budgets, its memory."""
    fp8 = tuple(int(v) for v in compute_capability.split(".")) >= (8, 9)
    return Preset(name, f"{name} (this machine)", "tensorrt", ("11",), compute_capability, memory_bytes,
                  _DATACENTER if fp8 else _ORIN, 2 * GiB, 32768, 240, 4096, 16, overhead_bytes=2 * GiB)


def host_preset(memory_bytes: int) -> Preset:
    """The CPU as a target (a PyTorch or ONNX Runtime run without a GPU): its memory, 1 GiB for the runtime's
    libraries, no builder workspace, every precision."""
    return Preset("host", "this machine's memory (CPU)", "tensorrt", (), "0.0", memory_bytes, tuple(PRECISIONS), 0,
                  32768, 240, 4096, 16, overhead_bytes=1 * GiB)
