// The VideoRope CUDA kernel (see videorope_kernel.h for the contract).
//
// Grid: one block per token (b, s); the block first computes (cos, sin) of its F angles into shared memory, once,
// then its threads walk (heads of q and k) x (vector units of one head), so no cos/sin table ever reaches memory.
// Angles: the contract's angle is the fp32 product position * inv_freq (what transformers computes, and what the
// numpy reference rounds to). Its sine and cosine are then evaluated accurately: the fp32 angle is reduced to
// [-1, 1] half-turns in fp64 (exact enough for angles far beyond 128k x theta) and passed to sincospif, which,
// unlike sincosf, never takes the Payne-Hanek slow path that needs local memory.
#include "videorope_kernel.h"

#include "videorope_device.cuh"

namespace
{

using namespace videorope::device;

// Element offset of (b, h, s, 0) for one tensor with `heads` heads.
__device__ __forceinline__ int64_t rowOffset(VideoRopeParams const& p, int64_t b, int64_t s, int h, int heads)
{
    int64_t const row = p.layout == 0 ? (b * heads + h) * p.seq + s : (b * p.seq + s) * heads + h;
    return row * p.head_dim;
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
        rotateUnit<T, N, VECTOR, INTERLEAVED>(p.num_freq, p.head_dim, cs, x, y, u, rotUnits);
    }
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
