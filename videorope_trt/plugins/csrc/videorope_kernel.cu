// The VideoRope CUDA kernel (see videorope_kernel.h for the contract).
//
// Grid: one block per token (b, s); the block first computes (cos, sin) of its F angles into shared memory, once,
// then its threads walk (heads of q and k) x (vector units of one head), so no cos/sin table ever reaches memory.
// Angles: the contract's angle is the fp32 product position * inv_freq (what transformers computes, and what the
// numpy reference rounds to). Its sine and cosine are then evaluated accurately: the fp32 angle is reduced to
// [-1, 1] half-turns in fp64 (exact enough for angles far beyond 128k x theta) and passed to sincospif, which,
// unlike sincosf, never takes the Payne-Hanek slow path that needs local memory.
#include "videorope_kernel.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace
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

// Element offset of (b, h, s, 0) for one tensor with `heads` heads.
__device__ __forceinline__ int64_t rowOffset(VideoRopeParams const& p, int64_t b, int64_t s, int h, int heads)
{
    int64_t const row = p.layout == 0 ? (b * heads + h) * p.seq + s : (b * p.seq + s) * heads + h;
    return row * p.head_dim;
}

// One unit: N pairs (rotate-half) or N elements = N/2 pairs (interleaved) of the rotated part, or N elements of the
// pass-through tail (elements past head_dim are skipped: only the scalar kernel can have a ragged tail).
template <typename T, int N, bool VECTOR, bool INTERLEAVED>
__device__ __forceinline__ void rotateUnit(
    VideoRopeParams const& p, float2 const* cs, T const* x, T* y, int u, int rotUnits)
{
    int const f = p.num_freq;
    if (u >= rotUnits)
    {
        int const d0 = 2 * f + (u - rotUnits) * N;
        if constexpr (VECTOR)
        {
            store<T, N, true>(y + d0, load<T, N, true>(x + d0));
        }
        else
        {
            for (int j = 0; j < N && d0 + j < p.head_dim; ++j)
                y[d0 + j] = x[d0 + j];
        }
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

template <typename T, int N, bool VECTOR, bool INTERLEAVED>
__global__ void __launch_bounds__(kMaxThreads) videoRopeKernel(VideoRopeParams p, int rotUnits, int units)
{
    extern __shared__ float2 cs[]; // (cos, sin) * scale per frequency of this token
    int64_t const token = blockIdx.x;
    int64_t const b = token / p.seq;
    int64_t const s = token - b * p.seq;
    for (int k = threadIdx.x; k < p.num_freq; k += blockDim.x)
    {
        int const axis = min(max(p.axis_map[k], 0), p.num_axes - 1);
        float const pos = p.positions[(axis * p.batch + b) * p.seq + s];
        cs[k] = cosSin(pos, p.inv_freq[k], p.scale);
    }
    __syncthreads();
    int const heads = p.q_heads + p.k_heads;
    for (int i = threadIdx.x; i < heads * units; i += blockDim.x)
    {
        int const h = i / units;
        int const u = i - h * units;
        bool const isQ = h < p.q_heads;
        int const hh = isQ ? h : h - p.q_heads;
        int64_t const off = rowOffset(p, b, s, hh, isQ ? p.q_heads : p.k_heads);
        T const* x = static_cast<T const*>(isQ ? p.q : p.k) + off;
        T* y = static_cast<T*>(isQ ? p.q_out : p.k_out) + off;
        rotateUnit<T, N, VECTOR, INTERLEAVED>(p, cs, x, y, u, rotUnits);
    }
}

bool aligned(void const* ptr, int bytes)
{
    return ptr == nullptr || reinterpret_cast<uintptr_t>(ptr) % bytes == 0;
}

// Widest vector that divides the rotated span and the row, with every pointer aligned to it.
template <typename T, int N>
bool canVectorize(VideoRopeParams const& p)
{
    int const span = p.interleaved ? 2 * p.num_freq : p.num_freq;
    int const bytes = static_cast<int>(sizeof(T)) * N;
    return span % N == 0 && p.head_dim % N == 0 && aligned(p.q, bytes) && aligned(p.q_out, bytes)
        && aligned(p.k, bytes) && aligned(p.k_out, bytes);
}

template <typename T, int N, bool VECTOR, bool INTERLEAVED>
cudaError_t launchWith(VideoRopeParams const& p, cudaStream_t stream)
{
    // A rotate-half unit covers N pairs (N elements in each half); an interleaved unit N elements (N/2 pairs).
    int const rotUnits = INTERLEAVED ? 2 * p.num_freq / N : p.num_freq / N;
    int const tail = p.head_dim - 2 * p.num_freq;
    int const units = rotUnits + (tail + N - 1) / N;
    int const work = (p.q_heads + p.k_heads) * units;
    int threads = ((work + 31) / 32) * 32;
    threads = threads < 64 ? 64 : (threads > kMaxThreads ? kMaxThreads : threads);
    size_t const smem = sizeof(float2) * p.num_freq;
    int64_t const blocks = p.batch * p.seq;
    videoRopeKernel<T, N, VECTOR, INTERLEAVED>
        <<<static_cast<unsigned>(blocks), threads, smem, stream>>>(p, rotUnits, units);
    return cudaGetLastError();
}

template <typename T, bool INTERLEAVED>
cudaError_t launchTyped(VideoRopeParams const& p, cudaStream_t stream)
{
    constexpr int kWide = 16 / sizeof(T);
    if (canVectorize<T, kWide>(p))
        return launchWith<T, kWide, true, INTERLEAVED>(p, stream);
    if (canVectorize<T, 2>(p))
        return launchWith<T, 2, true, INTERLEAVED>(p, stream);
    return launchWith<T, INTERLEAVED ? 2 : 1, false, INTERLEAVED>(p, stream);
}

template <typename T>
cudaError_t launchLayout(VideoRopeParams const& p, cudaStream_t stream)
{
    return p.interleaved ? launchTyped<T, true>(p, stream) : launchTyped<T, false>(p, stream);
}

bool valid(VideoRopeParams const& p)
{
    bool const shapes = p.batch >= 1 && p.seq >= 1 && p.batch * p.seq <= 0x7fffffffLL && p.q_heads >= 1
        && p.k_heads >= 0 && p.head_dim >= 2 && p.num_freq >= 1 && 2 * p.num_freq <= p.head_dim && p.num_axes >= 1
        && p.num_axes <= kMaxAxes;
    bool const ptrs = p.q && p.q_out && p.positions && p.inv_freq && p.axis_map && (p.k_heads == 0 || (p.k && p.k_out));
    bool const attrs = p.dtype >= VIDEOROPE_FP32 && p.dtype <= VIDEOROPE_BF16 && (p.layout == 0 || p.layout == 1)
        && (p.interleaved == 0 || p.interleaved == 1);
    return shapes && ptrs && attrs;
}

} // namespace

extern "C" VIDEOROPE_API int videorope_launch(VideoRopeParams const* params, void* stream)
{
    if (params == nullptr || !valid(*params))
        return static_cast<int>(cudaErrorInvalidValue);
    VideoRopeParams p = *params;
    if (p.k_heads == 0)
        p.k = p.k_out = nullptr;
    cudaStream_t const s = static_cast<cudaStream_t>(stream);
    cudaError_t err = cudaErrorInvalidValue;
    switch (p.dtype)
    {
    case VIDEOROPE_FP32: err = launchLayout<float>(p, s); break;
    case VIDEOROPE_FP16: err = launchLayout<__half>(p, s); break;
    case VIDEOROPE_BF16: err = launchLayout<__nv_bfloat16>(p, s); break;
    default: break;
    }
    return static_cast<int>(err);
}

extern "C" VIDEOROPE_API int videorope_params_size(void)
{
    return static_cast<int>(sizeof(VideoRopeParams));
}
