#!/usr/bin/env bash
# Export → engines → answer, for one target: an Orin Nano, an Orin NX or an H200 (any preset of `videorope-trt plan`).
#
#   TARGET=orin-nano-8gb bash examples/deploy.sh CKPT VIDEO         # on the Jetson itself (JetPack 6.2)
#   TARGET=orin-nx-16gb  bash examples/deploy.sh CKPT VIDEO
#   TARGET=h200          bash examples/deploy.sh CKPT VIDEO
#
# The graphs are written for the oldest TensorRT the target names (export --target); the engines are built where they
# run, against that machine's TensorRT headers (TRT_INCLUDE) for its GPU (ARCHS). BUILD_TARGET and BACKEND let the
# same steps run elsewhere: BUILD_TARGET=rtx builds ahead of time with TensorRT-RTX, BACKEND=onnxruntime answers
# without TensorRT.
# `videorope-trt plan` (the first step) says whether the model fits the target at PRECISION (fp32 or fp16, what export
# writes): Qwen2-VL-2B fits an Orin Nano 8GB only with INT8 weights. For those, run examples/calibrate_folder.sh on
# OUT after the export, then build its decoder: BUILD_ARGS="--graphs vision decoder.int8-sq".
set -euo pipefail
CKPT=$1; VIDEO=$2
TARGET=${TARGET:-orin-nano-8gb}
BUILD_TARGET=${BUILD_TARGET:-$TARGET}
BACKEND=${BACKEND:-tensorrt}
PRECISION=${PRECISION:-fp16}
OUT=${OUT:-out-$TARGET}
TRT_INCLUDE=${TRT_INCLUDE:-/usr/include/aarch64-linux-gnu}
declare -A ARCH=([orin-nano-8gb]=87 [orin-nx-16gb]=87 [agx-orin-64gb]=87 [thor]=110 [h100]=90 [h200]=90 [rtx]=89)
ARCHS=${ARCHS:-${ARCH[$BUILD_TARGET]}}

videorope-trt plan "$CKPT" --target "$TARGET" --precision "$PRECISION"        # what fits, before anything is built
videorope-trt export "$CKPT" "$OUT" --target "$TARGET" --precision "$PRECISION"  # plugin form: the in-place cache
videorope-trt build-plugin --out "$OUT/plugins" --trt-include "$TRT_INCLUDE" --archs "$ARCHS" --no-ptx
videorope-trt build "$OUT" --target "$BUILD_TARGET" ${BUILD_ARGS:-}
videorope-trt run "$OUT" --backend "$BACKEND" --video "$VIDEO" --prompt "What happens in the video?" \
    --max-new-tokens 32 --no-progress
