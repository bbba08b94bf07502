"""The VideoRope and VideoRopeCache CUDA kernels on torch CUDA tensors, through ctypes (for the GPU runtime, the
tests and the benchmarks).

    lib = load("build/plugins/libvideorope_kernel.so")       # or the plugin library: both export the launchers
    q_rot, k_rot = rotate(q, positions, inv_freq, axis_map, RotaryAttrs(layout=1), k=k, lib=lib)
    q_rot = rotate_into_cache(q, k, v, positions, inv_freq, axis_map, k_cache, v_cache, write_offset, attrs, lib=lib)

One launch each, on torch's current stream; `rotate_into_cache` writes the caches in place. The library is built by
`videorope_trt.plugins.build` (`kernel_only=True` needs no TensorRT headers).
"""

from __future__ import annotations

import ctypes
import os
from functools import lru_cache
from pathlib import Path

from videorope_trt.rope.contract import LAYOUT_BHSD, MAX_AXES, RotaryAttrs

LIB_ENV = "VIDEOROPE_KERNEL_LIB"


class Params(ctypes.Structure):
    """Mirror of `VideoRopeParams` in csrc/videorope_kernel.h (checked against videorope_params_size())."""

    _fields_ = [
        ("q", ctypes.c_void_p), ("q_out", ctypes.c_void_p), ("k", ctypes.c_void_p), ("k_out", ctypes.c_void_p),
        ("positions", ctypes.c_void_p), ("inv_freq", ctypes.c_void_p), ("axis_map", ctypes.c_void_p),
        ("batch", ctypes.c_int64), ("seq", ctypes.c_int64), ("q_heads", ctypes.c_int32),
        ("k_heads", ctypes.c_int32), ("head_dim", ctypes.c_int32), ("num_freq", ctypes.c_int32),
        ("num_axes", ctypes.c_int32), ("dtype", ctypes.c_int32), ("layout", ctypes.c_int32),
        ("interleaved", ctypes.c_int32), ("scale", ctypes.c_float),
    ]


class CacheParams(ctypes.Structure):
    """Mirror of `VideoRopeCacheParams` in csrc/videorope_cache_kernel.h (checked against
    videorope_cache_params_size())."""

    _fields_ = [
        ("q", ctypes.c_void_p), ("q_out", ctypes.c_void_p), ("k", ctypes.c_void_p), ("v", ctypes.c_void_p),
        ("k_cache", ctypes.c_void_p), ("v_cache", ctypes.c_void_p), ("positions", ctypes.c_void_p),
        ("inv_freq", ctypes.c_void_p), ("axis_map", ctypes.c_void_p), ("write_offset", ctypes.c_void_p),
        ("batch", ctypes.c_int64), ("seq", ctypes.c_int64), ("capacity", ctypes.c_int64),
        ("q_heads", ctypes.c_int32), ("kv_heads", ctypes.c_int32), ("head_dim", ctypes.c_int32),
        ("num_freq", ctypes.c_int32), ("num_axes", ctypes.c_int32), ("dtype", ctypes.c_int32),
        ("layout", ctypes.c_int32), ("interleaved", ctypes.c_int32), ("scale", ctypes.c_float),
    ]


@lru_cache(maxsize=None)
def load(path=None) -> ctypes.CDLL:
    """Open the kernel (or plugin) library at `path` (default: $VIDEOROPE_KERNEL_LIB) and check the ABI."""
    path = path or os.environ.get(LIB_ENV)
    if not path:
        raise FileNotFoundError(f"no VideoRope kernel library given: pass a path or set {LIB_ENV} (build one with "
                                "`videorope-trt build-plugin --kernel-only --out DIR`)")
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"VideoRope kernel library not found: {path}")
    lib = ctypes.CDLL(str(path))
    _declare_cache_entry(lib, path)
    lib.videorope_launch.argtypes = [ctypes.POINTER(Params), ctypes.c_void_p]
    lib.videorope_launch.restype = ctypes.c_int
    lib.videorope_params_size.restype = ctypes.c_int
    if lib.videorope_params_size() != ctypes.sizeof(Params):
        raise RuntimeError(f"{path}: VideoRopeParams is {lib.videorope_params_size()} bytes, this wrapper expects "
                           f"{ctypes.sizeof(Params)}: rebuild the library from this checkout")
    return lib


def _declare_cache_entry(lib, path) -> None:
    """Types of videorope_cache_launch and the struct-size check; a library built before the op existed lacks it."""
    if not hasattr(lib, "videorope_cache_launch"):
        return  # rotate_into_cache says so when called
    lib.videorope_cache_launch.argtypes = [ctypes.POINTER(CacheParams), ctypes.c_void_p]
    lib.videorope_cache_launch.restype = ctypes.c_int
    lib.videorope_cache_params_size.restype = ctypes.c_int
    if lib.videorope_cache_params_size() != ctypes.sizeof(CacheParams):
        raise RuntimeError(f"{path}: VideoRopeCacheParams is {lib.videorope_cache_params_size()} bytes, this wrapper "
                           f"expects {ctypes.sizeof(CacheParams)}: rebuild the library from this checkout")


def _dtype_code(dtype) -> int:
    import torch

    codes = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
    if dtype not in codes:
        raise ValueError(f"VideoRope kernel: x must be float32, float16 or bfloat16, got {dtype}")
    return codes[dtype]


def _check_tensor(t, name, dtype=None, ndim=None):
    if not t.is_cuda or not t.is_contiguous():
        raise ValueError(f"VideoRope kernel: {name} must be a contiguous CUDA tensor, got device={t.device}, "
                         f"contiguous={t.is_contiguous()}")
    if dtype is not None and t.dtype != dtype:
        raise ValueError(f"VideoRope kernel: {name} must be {dtype}, got {t.dtype}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"VideoRope kernel: {name} must be {ndim}-D, got shape {tuple(t.shape)}")


def _params(q, k, positions, inv_freq, axis_map, attrs: RotaryAttrs, q_out, k_out) -> Params:
    import torch

    _check_tensor(q, "q", ndim=4)
    _check_tensor(positions, "positions", torch.float32, 3)
    _check_tensor(inv_freq, "inv_freq", torch.float32, 1)
    _check_tensor(axis_map, "axis_map", torch.int32, 1)
    bhsd = attrs.layout == LAYOUT_BHSD
    b, s, d = q.shape[0], q.shape[2 if bhsd else 1], q.shape[3]
    heads = lambda t: t.shape[1 if bhsd else 2]
    f, a = inv_freq.shape[0], positions.shape[0]
    if tuple(positions.shape[1:]) != (b, s) or not 1 <= a <= MAX_AXES:
        raise ValueError(f"VideoRope kernel: positions must be (A<=4, B={b}, S={s}), got {tuple(positions.shape)}")
    if not 1 <= f <= d // 2 or axis_map.shape[0] != f:
        raise ValueError(f"VideoRope kernel: inv_freq ({f}) and axis_map ({axis_map.shape[0]}) must have equal "
                         f"length in 1..{d // 2}")
    if k is not None:
        _check_tensor(k, "k", q.dtype, 4)
        kb, ks, kd = k.shape[0], k.shape[2 if bhsd else 1], k.shape[3]
        if (kb, ks, kd) != (b, s, d):
            raise ValueError(f"VideoRope kernel: k {tuple(k.shape)} must share B, S, D with q {tuple(q.shape)}")
    ptr = lambda t: None if t is None else t.data_ptr()
    return Params(ptr(q), ptr(q_out), ptr(k), ptr(k_out), ptr(positions), ptr(inv_freq), ptr(axis_map), b, s,
                  heads(q), 0 if k is None else heads(k), d, f, a, _dtype_code(q.dtype), attrs.layout,
                  attrs.interleaved, attrs.scale)


def rotate(q, positions, inv_freq, axis_map, attrs: RotaryAttrs = RotaryAttrs(), k=None, out_q=None, out_k=None,
           lib=None):
    """Rotate q (and k) in one launch; returns (q_rot, k_rot or None). `out_*` may be the inputs (in place)."""
    import torch

    lib = lib if isinstance(lib, ctypes.CDLL) else load(lib)
    out_q = torch.empty_like(q) if out_q is None else out_q
    out_k = None if k is None else (torch.empty_like(k) if out_k is None else out_k)
    p = _params(q, k, positions, inv_freq, axis_map, attrs, out_q, out_k)
    if q.numel() == 0:
        return out_q, out_k
    stream = torch.cuda.current_stream(q.device).cuda_stream
    err = lib.videorope_launch(ctypes.byref(p), ctypes.c_void_p(stream))
    if err != 0:
        raise RuntimeError(f"VideoRope kernel launch failed with CUDA error {err} for q {tuple(q.shape)}")
    return out_q, out_k


def _cache_params(q, k, v, positions, inv_freq, axis_map, k_cache, v_cache, write_offset, attrs, q_out):
    from videorope_trt.rope.apply import check_cache_inputs

    tensors = dict(q=q, k=k, v=v, k_cache=k_cache, v_cache=v_cache, write_offset=write_offset, q_out=q_out)
    b, s, kv, c = check_cache_inputs({n: tuple(t.shape) for n, t in tensors.items()},
                                     {n: t.dtype for n, t in tensors.items()}, attrs)
    for name, t in tensors.items():
        _check_tensor(t, name)
        if t.device != q.device:
            raise ValueError(f"VideoRopeCache kernel: every tensor must be on q's device {q.device}; {name} is on "
                             f"{t.device}")
    if q_out.shape != q.shape or q_out.dtype != q.dtype:
        raise ValueError(f"VideoRopeCache kernel: out_q must be like q {tuple(q.shape)} {q.dtype}, got "
                         f"{tuple(q_out.shape)} {q_out.dtype}")
    rot = _params(q, None, positions, inv_freq, axis_map, attrs, q_out, None)  # positions, frequencies, dtype
    ptr = lambda t: t.data_ptr()
    return CacheParams(ptr(q), ptr(q_out), ptr(k), ptr(v), ptr(k_cache), ptr(v_cache), rot.positions, rot.inv_freq,
                       rot.axis_map, ptr(write_offset), b, s, c, rot.q_heads, kv, rot.head_dim, rot.num_freq,
                       rot.num_axes, rot.dtype, attrs.layout, attrs.interleaved, attrs.scale)


def rotate_into_cache(q, k, v, positions, inv_freq, axis_map, k_cache, v_cache, write_offset,
                      attrs: RotaryAttrs = RotaryAttrs(), out_q=None, lib=None):
    """`VideoRopeCache` in one launch: returns q_rot (`out_q`, which may be q) and writes the rotated k and the v
    into k_cache / v_cache in place at rows write_offset[b] + s (int32 offsets on the device; rows outside the
    cache are skipped)."""
    import torch

    lib = lib if isinstance(lib, ctypes.CDLL) else load(lib)
    if not hasattr(lib, "videorope_cache_launch"):
        raise RuntimeError("this kernel library has no videorope_cache_launch: rebuild it from this checkout "
                           "(`videorope-trt build-plugin --kernel-only --out DIR`)")
    out_q = torch.empty_like(q) if out_q is None else out_q
    p = _cache_params(q, k, v, positions, inv_freq, axis_map, k_cache, v_cache, write_offset, attrs, out_q)
    if q.numel() == 0:
        return out_q
    stream = torch.cuda.current_stream(q.device).cuda_stream
    err = lib.videorope_cache_launch(ctypes.byref(p), ctypes.c_void_p(stream))
    if err != 0:
        raise RuntimeError(f"VideoRopeCache kernel launch failed with CUDA error {err} for q {tuple(q.shape)}, "
                           f"cache {tuple(k_cache.shape)}")
    return out_q
