// Device pieces shared by the VideoRope and VideoRopeCache kernels: dtype conversions, vector loads and stores, the
// contract's (cos, sin) of one angle, and the rotation of one vector unit of a head (see videorope_kernel.cu).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdint.h>

namespace videorope
{
namespace device
{

constexpr int kMaxAxes = 4;
constexpr int kMaxThreads = 256;

__device__ __forceinline__ float toFloat(float v) { return v; }
__device__ __forceinline__ float toFloat(__half v) { return __half2float(v); }
__device__ __forceinline__ float toFloat(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T fromFloat(float v);
template <>
__device__ __forceinline__ float fromFloat<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half fromFloat<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 fromFloat<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// N consecutive elements; aligned to their size so that one load/store instruction moves them (16 bytes at most).
template <typename T, int N>
struct alignas(sizeof(T) * N) Vec
{
    T v[N];
};

template <typename T, int N, bool VECTOR>
__device__ __forceinline__ Vec<T, N> load(T const* p)
{
    if constexpr (VECTOR)
    {
        return *reinterpret_cast<Vec<T, N> const*>(p);
    }
    else
    {
        Vec<T, N> r;
#pragma unroll
        for (int j = 0; j < N; ++j)
            r.v[j] = p[j];
        return r;
    }
}

template <typename T, int N, bool VECTOR>
__device__ __forceinline__ void store(T* p, Vec<T, N> const& r)
{
    if constexpr (VECTOR)
    {
        *reinterpret_cast<Vec<T, N>*>(p) = r;
    }
    else
    {
#pragma unroll
        for (int j = 0; j < N; ++j)
            p[j] = r.v[j];
    }
}

// (cos, sin) * scale of the fp32 angle pos * freq.
__device__ __forceinline__ float2 cosSin(float pos, float freq, float scale)
{
    float const angle = __fmul_rn(pos, freq); // rounded to fp32 as the contract says, never fused into the fp64 math
    double const halfTurns = static_cast<double>(angle) * 0.31830988618379067154;
    double const reduced = halfTurns - 2.0 * rint(0.5 * halfTurns); // in [-1, 1]
    float s, c;
    sincospif(static_cast<float>(reduced), &s, &c);
    return make_float2(c * scale, s * scale);
}

// Unit t of the pass-through tail (dims >= 2F): N elements; those past headDim are skipped (only the scalar kernel
// can have a ragged tail).
template <typename T, int N, bool VECTOR>
__device__ __forceinline__ void copyTail(int f, int headDim, T const* x, T* y, int t)
{
    int const d0 = 2 * f + t * N;
    if constexpr (VECTOR)
    {
        store<T, N, true>(y + d0, load<T, N, true>(x + d0));
    }
    else
    {
        for (int j = 0; j < N && d0 + j < headDim; ++j)
            y[d0 + j] = x[d0 + j];
    }
}

// One unit: N pairs (rotate-half) or N elements = N/2 pairs (interleaved) of the rotated part, or a tail unit.
template <typename T, int N, bool VECTOR, bool INTERLEAVED>
__device__ __forceinline__ void rotateUnit(
    int f, int headDim, float2 const* cs, T const* x, T* y, int u, int rotUnits)
{
    if (u >= rotUnits)
    {
        copyTail<T, N, VECTOR>(f, headDim, x, y, u - rotUnits);
        return;
    }
    if constexpr (INTERLEAVED)
    {
        int const d0 = u * N;
        Vec<T, N> a = load<T, N, VECTOR>(x + d0);
#pragma unroll
        for (int j = 0; j < N; j += 2)
        {
            float2 const c = cs[(d0 + j) / 2];
            float const x1 = toFloat(a.v[j]), x2 = toFloat(a.v[j + 1]);
            a.v[j] = fromFloat<T>(x1 * c.x - x2 * c.y);
            a.v[j + 1] = fromFloat<T>(x2 * c.x + x1 * c.y);
        }
        store<T, N, VECTOR>(y + d0, a);
    }
    else
    {
        int const k0 = u * N;
        Vec<T, N> a = load<T, N, VECTOR>(x + k0);
        Vec<T, N> b = load<T, N, VECTOR>(x + f + k0);
#pragma unroll
        for (int j = 0; j < N; ++j)
        {
            float2 const c = cs[k0 + j];
            float const x1 = toFloat(a.v[j]), x2 = toFloat(b.v[j]);
            a.v[j] = fromFloat<T>(x1 * c.x - x2 * c.y);
            b.v[j] = fromFloat<T>(x2 * c.x + x1 * c.y);
        }
        store<T, N, VECTOR>(y + k0, a);
        store<T, N, VECTOR>(y + f + k0, b);
    }
}

// The same unit as rotateUnit, copied unchanged (the values, which share the keys' units in the cache kernel).
template <typename T, int N, bool VECTOR, bool INTERLEAVED>
__device__ __forceinline__ void copyUnit(int f, int headDim, T const* x, T* y, int u, int rotUnits)
{
    if (u >= rotUnits)
    {
        copyTail<T, N, VECTOR>(f, headDim, x, y, u - rotUnits);
        return;
    }
    int const d0 = u * N; // interleaved: N elements; rotate-half: N of each half
    store<T, N, VECTOR>(y + d0, load<T, N, VECTOR>(x + d0));
    if constexpr (!INTERLEAVED)
        store<T, N, VECTOR>(y + f + d0, load<T, N, VECTOR>(x + f + d0));
}

inline bool aligned(void const* ptr, int bytes)
{
    return ptr == nullptr || reinterpret_cast<uintptr_t>(ptr) % bytes == 0;
}

} // namespace device
} // namespace videorope
