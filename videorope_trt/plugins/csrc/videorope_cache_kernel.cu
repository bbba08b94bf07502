// The VideoRopeCache CUDA kernel (contract in videorope_cache_kernel.h).
//
// Grid: x = token (b, s), y = a group of heads of that token, over the q heads, then the k heads, then the v heads.
// Each block computes the (cos, sin) of its token's F angles into shared memory once (as the VideoRope kernel, same
// angle math: fp32 product, fp64 reduction to half-turns, sincospif), then its threads walk (heads of the group) x
// (vector units of one head): a q unit is rotated into q_out, a k unit rotated into its cache row, a v unit copied
// into its cache row. A token whose row write_offset[b] + s falls outside [0, C) rotates its q heads and writes
// nothing else. q, k and v are read once, q_out and the S written rows of each cache written once; nothing else of the
// caches is read or written, and no memory is allocated.
#include "videorope_cache_kernel.h"

#include "videorope_device.cuh"

namespace
{

using namespace videorope::device;

// Element offset of (b, h, s, 0) in q, k or v (`heads` heads, the params' layout).
__device__ __forceinline__ int64_t inputRow(VideoRopeCacheParams const& p, int64_t b, int64_t s, int h, int heads)
{
    int64_t const row = p.layout == 0 ? (b * heads + h) * p.seq + s : (b * p.seq + s) * heads + h;
    return row * p.head_dim;
}

template <typename T, int N, bool VECTOR, bool INTERLEAVED>
__global__ void __launch_bounds__(kMaxThreads)
    videoRopeCacheKernel(VideoRopeCacheParams p, int rotUnits, int units, int headsPerBlock)
{
    extern __shared__ float2 cs[]; // (cos, sin) * scale per frequency of this token
    int64_t const token = blockIdx.x;
    int64_t const b = token / p.seq;
    int64_t const s = token - b * p.seq;
    int const h0 = static_cast<int>(blockIdx.y) * headsPerBlock;
    int const totalHeads = p.q_heads + 2 * p.kv_heads;
    int const nh = min(headsPerBlock, totalHeads - h0);
    int64_t const row = static_cast<int64_t>(p.write_offset[b]) + s;
    bool const inCache = row >= 0 && row < p.capacity;
    bool const rotates = h0 < p.q_heads + (inCache ? p.kv_heads : 0); // some q or k head of this block is written
    for (int k = threadIdx.x; rotates && k < p.num_freq; k += blockDim.x)
    {
        int const axis = min(max(p.axis_map[k], 0), p.num_axes - 1);
        float const pos = p.positions[(axis * p.batch + b) * p.seq + s];
        cs[k] = cosSin(pos, p.inv_freq[k], p.scale);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < nh * units; i += blockDim.x)
    {
        int const h = h0 + i / units;
        int const u = i - (h - h0) * units;
        if (h < p.q_heads)
        {
            int64_t const off = inputRow(p, b, s, h, p.q_heads);
            rotateUnit<T, N, VECTOR, INTERLEAVED>(p.num_freq, p.head_dim, cs, static_cast<T const*>(p.q) + off,
                static_cast<T*>(p.q_out) + off, u, rotUnits);
            continue;
        }
        if (!inCache)
            continue;
        bool const isK = h < p.q_heads + p.kv_heads;
        int const j = isK ? h - p.q_heads : h - p.q_heads - p.kv_heads;
        T const* x = static_cast<T const*>(isK ? p.k : p.v) + inputRow(p, b, s, j, p.kv_heads);
        T* y = static_cast<T*>(isK ? p.k_cache : p.v_cache) + ((b * p.kv_heads + j) * p.capacity + row) * p.head_dim;
        if (isK)
            rotateUnit<T, N, VECTOR, INTERLEAVED>(p.num_freq, p.head_dim, cs, x, y, u, rotUnits);
        else
            copyUnit<T, N, VECTOR, INTERLEAVED>(p.num_freq, p.head_dim, x, y, u, rotUnits);
    }
}

// Widest vector that divides the rotated span and the row, with every pointer aligned to it (cache rows start at
// multiples of head_dim, so the cache base pointers decide).
template <typename T, int N>
bool canVectorize(VideoRopeCacheParams const& p)
{
    int const span = p.interleaved ? 2 * p.num_freq : p.num_freq;
    int const bytes = static_cast<int>(sizeof(T)) * N;
    return span % N == 0 && p.head_dim % N == 0 && aligned(p.q, bytes) && aligned(p.q_out, bytes)
        && aligned(p.k, bytes) && aligned(p.v, bytes) && aligned(p.k_cache, bytes) && aligned(p.v_cache, bytes);
}

template <typename T, int N, bool VECTOR, bool INTERLEAVED>
cudaError_t launchWith(VideoRopeCacheParams const& p, cudaStream_t stream)
{
    // A rotate-half unit covers N pairs (N elements in each half); an interleaved unit N elements (N/2 pairs).
    int const rotUnits = INTERLEAVED ? 2 * p.num_freq / N : p.num_freq / N;
    int const units = rotUnits + (p.head_dim - 2 * p.num_freq + N - 1) / N;
    int const totalHeads = p.q_heads + 2 * p.kv_heads;
    int64_t const tokens = p.batch * p.seq;
    // Many tokens fill the GPU with one block per token; a few (decode) would leave most SMs idle, so their heads
    // are spread over more, smaller blocks (each recomputes only its token's F angles).
    int const perBlock = tokens >= 1024 ? kMaxThreads : 64;
    int const headsPerBlock = max(1, min(totalHeads, perBlock / units));
    int const groups = (totalHeads + headsPerBlock - 1) / headsPerBlock;
    int threads = ((headsPerBlock * units + 31) / 32) * 32;
    threads = threads < 32 ? 32 : (threads > kMaxThreads ? kMaxThreads : threads);
    size_t const smem = sizeof(float2) * p.num_freq;
    dim3 const grid(static_cast<unsigned>(tokens), static_cast<unsigned>(groups));
    videoRopeCacheKernel<T, N, VECTOR, INTERLEAVED><<<grid, threads, smem, stream>>>(p, rotUnits, units, headsPerBlock);
    return cudaGetLastError();
}

template <typename T, bool INTERLEAVED>
cudaError_t launchTyped(VideoRopeCacheParams const& p, cudaStream_t stream)
{
    constexpr int kWide = 16 / sizeof(T);
    if (canVectorize<T, kWide>(p))
        return launchWith<T, kWide, true, INTERLEAVED>(p, stream);
    if (canVectorize<T, 2>(p))
        return launchWith<T, 2, true, INTERLEAVED>(p, stream);
    return launchWith<T, INTERLEAVED ? 2 : 1, false, INTERLEAVED>(p, stream);
}

template <typename T>
cudaError_t launchLayout(VideoRopeCacheParams const& p, cudaStream_t stream)
{
    return p.interleaved ? launchTyped<T, true>(p, stream) : launchTyped<T, false>(p, stream);
}

bool valid(VideoRopeCacheParams const& p)
{
    bool const shapes = p.batch >= 1 && p.seq >= 1 && p.batch * p.seq <= 0x7fffffffLL && p.capacity >= 0
        && p.q_heads >= 1 && p.kv_heads >= 1 && p.q_heads + 2 * static_cast<int64_t>(p.kv_heads) <= 65535
        && p.head_dim >= 2 && p.num_freq >= 1 && 2 * p.num_freq <= p.head_dim && p.num_axes >= 1
        && p.num_axes <= kMaxAxes;
    bool const ptrs = p.q && p.q_out && p.k && p.v && p.k_cache && p.v_cache && p.positions && p.inv_freq
        && p.axis_map && p.write_offset;
    bool const attrs = p.dtype >= VIDEOROPE_FP32 && p.dtype <= VIDEOROPE_BF16 && (p.layout == 0 || p.layout == 1)
        && (p.interleaved == 0 || p.interleaved == 1);
    return shapes && ptrs && attrs;
}

} // namespace

extern "C" VIDEOROPE_API int videorope_cache_launch(VideoRopeCacheParams const* params, void* stream)
{
    if (params == nullptr || !valid(*params))
        return static_cast<int>(cudaErrorInvalidValue);
    cudaStream_t const s = static_cast<cudaStream_t>(stream);
    switch (params->dtype)
    {
    case VIDEOROPE_FP32: return static_cast<int>(launchLayout<float>(*params, s));
    case VIDEOROPE_FP16: return static_cast<int>(launchLayout<__half>(*params, s));
    case VIDEOROPE_BF16: return static_cast<int>(launchLayout<__nv_bfloat16>(*params, s));
    default: return static_cast<int>(cudaErrorInvalidValue);
    }
}

extern "C" VIDEOROPE_API int videorope_cache_params_size(void)
{
    return static_cast<int>(sizeof(VideoRopeCacheParams));
}
