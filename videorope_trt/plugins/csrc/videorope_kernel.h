// The VideoRope CUDA kernel: one launch rotates q and (optionally) k, contract in videorope_trt/rope/contract.py.
//
// y = VideoRope(x, positions, inv_freq, axis_map; interleaved, layout, scale)
//   angle[b, s, k] = positions[axis_map[k], b, s] * inv_freq[k]   (fp32 product; reduced in fp64, sincospi in fp32)
//   rotate-half: pair (k, k + F); interleaved: pair (2k, 2k + 1); dims >= 2F are copied unchanged.
//
// This header is plain C so that ctypes (videorope_trt/plugins/cuda.py) can mirror the struct; keep the two in sync
// (videorope_params_size() lets the wrapper check).
#pragma once

#include <stdint.h>

// The library is compiled with hidden visibility; only these entry points (and the plugin's) are exported.
#define VIDEOROPE_API __attribute__((visibility("default")))

#ifdef __cplusplus
extern "C" {
#endif

enum VideoRopeDType
{
    VIDEOROPE_FP32 = 0,
    VIDEOROPE_FP16 = 1,
    VIDEOROPE_BF16 = 2
};

typedef struct VideoRopeParams
{
    void const* q;           // (B, Hq, S, D) for layout 0, (B, S, Hq, D) for layout 1
    void* q_out;             // same shape; may equal q (in place)
    void const* k;           // optional second tensor with k_heads heads, same B, S, D, dtype, layout; NULL for none
    void* k_out;
    float const* positions;  // (A, B, S) float32
    float const* inv_freq;   // (F,) float32
    int32_t const* axis_map; // (F,) int32, values in [0, A) (out-of-range values are clamped)
    int64_t batch;
    int64_t seq;
    int32_t q_heads;
    int32_t k_heads; // 0 when k is NULL
    int32_t head_dim;
    int32_t num_freq; // F, 1 <= F <= head_dim / 2
    int32_t num_axes; // A, 1 <= A <= 4
    int32_t dtype;    // VideoRopeDType
    int32_t layout;   // 0: (B, H, S, D), 1: (B, S, H, D)
    int32_t interleaved;
    float scale;
} VideoRopeParams;

// Checks the parameters and launches on `stream` (a cudaStream_t). Returns 0 or a cudaError_t value; an invalid
// parameter returns cudaErrorInvalidValue (1) without launching.
VIDEOROPE_API int videorope_launch(VideoRopeParams const* params, void* stream);

// sizeof(VideoRopeParams), so that foreign-language mirrors can check their layout.
VIDEOROPE_API int videorope_params_size(void);

#ifdef __cplusplus
}
#endif
