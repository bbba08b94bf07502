#!/usr/bin/env bash
# The runtime's GPU checks and benchmarks in one pass on a CUDA machine (written for one H200, no TensorRT):
# builds the rotary kernel library, runs the GPU tests with it, then the speed and memory benchmarks in order of
# priority, each step bounded so the whole pass ends by $DEADLINE_S seconds. Results go to $OUT (default out/).
#
#   OUT=out DEADLINE_S=570 STEPS="tests 2b32k vision jetson 2b8k16k 7b32k" bash bench/runtime_h200.sh
#   (HF_SETTINGS=default skips transformers' static cache, which recompiles at every step on these models;
#   OURS_SETTINGS picks our settings for the 32k steps, default graph,compile; steps gemv and visionfused are the
#   one-row product and vision tower microbenchmarks, step decode the decode step alone, flash the decode attention's options in it (FLASH_VARIANTS, FLASH_VARIANTS_7B); TESTS narrows the GPU test files; PREFILL_CHUNK_2B, VISION_CHUNK_7B and PREFILL_CHUNK_7B size the 32k steps's calls)
set -u
OUT=${OUT:-out}
PY=${PY:-python3}
STEPS=${STEPS:-"tests 2b32k vision jetson 2b8k16k 7b32k"}
END=$(( $(date +%s) + ${DEADLINE_S:-570} ))
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
mkdir -p "$OUT"
LOG="$OUT/log.txt"

step() {  # step SECONDS NAME COMMAND...: run within SECONDS and the deadline, log its status
  local want=$1 name=$2; shift 2
  local left=$(( END - $(date +%s) - 5 ))
  (( want > left )) && want=$left
  if (( want < 20 )); then echo "== $name: skipped (deadline)" | tee -a "$LOG"; return; fi
  echo "== $name (limit ${want}s): $*" | tee -a "$LOG"
  local t0=$(date +%s)
  timeout "$want" "$@" 2>&1 | tee -a "$LOG"
  echo "== $name: exit ${PIPESTATUS[0]} after $(( $(date +%s) - t0 ))s" | tee -a "$LOG"
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv | tee -a "$LOG"
$PY -c "import torch, transformers, triton; print('torch', torch.__version__, 'transformers', transformers.__version__, 'triton', triton.__version__)" | tee -a "$LOG"
step 120 kernel $PY -m videorope_trt.cli build-plugin --kernel-only --out /tmp/vr-kernel --archs 90 --no-ptx
[ -f /tmp/vr-kernel/libvideorope_kernel.so ] && export VIDEOROPE_KERNEL_LIB=/tmp/vr-kernel/libvideorope_kernel.so  # the GPU tests read it

B="$PY -m bench.bench_runtime ${VIDEOROPE_KERNEL_LIB:+--kernel-lib $VIDEOROPE_KERNEL_LIB}"
M="$PY -m bench.bench_runtime_memory"
for s in $STEPS; do
  case $s in
    tests) step 300 tests $PY -m pytest -q -m gpu -p no:cacheprovider ${TESTS:-tests/runtime/test_backends.py tests/runtime/test_generate.py tests/runtime/test_decode_loop.py tests/runtime/test_gemv.py tests/runtime/test_flash_decode.py tests/runtime/test_prefill_attention.py tests/runtime/test_fused_decode.py tests/models/test_vision_tower.py} ;;
    gemv) step 120 gemv $PY -m bench.bench_gemv --out "$OUT/gemv" ;;
    decode) step 150 decode $PY -m bench.bench_decode_step --model 2b --contexts 8k,32k ${PROFILE:+--profile} --out "$OUT/decode2b"
            step 150 decode7b $PY -m bench.bench_decode_step --model 7b --contexts 32k --settings fused ${PROFILE:+--profile} --out "$OUT/decode7b" ;;
    flash) step 200 flash $PY -m bench.bench_flash_decode --model 2b --contexts 8k,32k ${FLASH_VARIANTS:+--variants $FLASH_VARIANTS} --out "$OUT/flash2b"
           step 150 flash7b $PY -m bench.bench_flash_decode --model 7b --contexts 32k ${FLASH_VARIANTS_7B:+--variants $FLASH_VARIANTS_7B} --out "$OUT/flash7b" ;;
    prefill) step 150 prefill $PY -m bench.bench_prefill --model 2b --out "$OUT/prefill"
             step 150 prefill7b $PY -m bench.bench_prefill --model 7b --chunks 2048,32768 --out "$OUT/prefill" ;;
    visionfused) step 150 visionfused $PY -m bench.bench_vision_attention --model 2b --contexts 32k --profile --out "$OUT/vision" ;;
    2b32k) step 260 2b32k $B --model 2b --contexts 32k --ours-settings ${OURS_SETTINGS:-graph,compile} --hf-settings ${HF_SETTINGS:-default,static} --hf-static-tokens 8 --vision-chunk 64 --prefill-chunk ${PREFILL_CHUNK_2B:-4096} ${PROFILE:+--profile} --out "$OUT/2b32k" ;;
    vision) step 60 vision $M vision --minutes 1,10,30,120 --out "$OUT/mem" ;;
    jetson) step 45 jetson $M jetson --target orin-nx-16gb --out "$OUT/mem"
            step 45 jetson-max $M jetson --target orin-nx-16gb --max-context 32768 --max-frames 252 --out "$OUT/mem" ;;
    2b8k16k) step 120 2b8k16k $B --model 2b --contexts 8k,16k --ours-settings graph --hf-settings default --profile --out "$OUT/2b816" ;;
    7b32k) step 240 7b32k $B --model 7b --contexts 32k --ours-settings ${OURS_SETTINGS_7B:-${OURS_SETTINGS:-graph,compile}} --hf-settings ${HF_SETTINGS:-default,static} --hf-static-tokens 8 --vision-chunk ${VISION_CHUNK_7B:-32} --prefill-chunk ${PREFILL_CHUNK_7B:-2048} ${PROFILE:+--profile} --out "$OUT/7b32k" ;;
    *) echo "unknown step $s" | tee -a "$LOG" ;;
  esac
done
