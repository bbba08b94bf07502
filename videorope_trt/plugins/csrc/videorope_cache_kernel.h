// The VideoRopeCache CUDA kernel: one launch rotates q into q_out and writes the rotated k and the raw v into the
// caches at each sequence's offset, in place (contract: videorope_trt/rope/contract.py).
//
//   q_out = VideoRope(q)
//   k_cache[b, :, write_offset[b] + s, :] = VideoRope(k)[b, :, s, :]   (in cache layout (B, KV, C, D))
//   v_cache[b, :, write_offset[b] + s, :] = v[b, :, s, :]
//   rows with write_offset[b] + s outside [0, C) are not written; no other cache row is touched.
//
// Plain C, mirrored by ctypes in videorope_trt/plugins/cuda.py (videorope_cache_params_size() lets it check).
#pragma once

#include "videorope_kernel.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct VideoRopeCacheParams
{
    void const* q;              // (B, Hq, S, D) for layout 0, (B, S, Hq, D) for layout 1
    void* q_out;                // same shape; may equal q (in place)
    void const* k;              // (B, KV, S, D) or (B, S, KV, D), the layout of q
    void const* v;              // k's shape
    void* k_cache;              // (B, KV, C, D) whatever the layout; written in place
    void* v_cache;              // (B, KV, C, D)
    float const* positions;     // (A, B, S) float32
    float const* inv_freq;      // (F,) float32
    int32_t const* axis_map;    // (F,) int32, values in [0, A) (out-of-range values are clamped)
    int32_t const* write_offset; // (B,) int32, on the device
    int64_t batch;
    int64_t seq;
    int64_t capacity; // C; 0 writes nothing
    int32_t q_heads;
    int32_t kv_heads;
    int32_t head_dim;
    int32_t num_freq; // F, 1 <= F <= head_dim / 2
    int32_t num_axes; // A, 1 <= A <= 4
    int32_t dtype;    // VideoRopeDType, one for q, k, v and both caches
    int32_t layout;   // of q, k and v: 0 (B, H, S, D), 1 (B, S, H, D)
    int32_t interleaved;
    float scale;
} VideoRopeCacheParams;

// Checks the parameters and launches on `stream` (a cudaStream_t). Returns 0 or a cudaError_t value; an invalid
// parameter returns cudaErrorInvalidValue (1) without launching. Allocates nothing; capture-safe.
VIDEOROPE_API int videorope_cache_launch(VideoRopeCacheParams const* params, void* stream);

// sizeof(VideoRopeCacheParams), so that foreign-language mirrors can check their layout.
VIDEOROPE_API int videorope_cache_params_size(void);

#ifdef __cplusplus
}
#endif
