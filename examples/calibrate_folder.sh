#!/usr/bin/env bash
# INT8 (SmoothQuant W8A8) calibration on a folder of your own videos, for a Jetson Orin target:
#
#   bash examples/calibrate_folder.sh CKPT VIDEOS_DIR PROMPTS_TXT [OUT]
#
# The last video of the folder is held out: calibration/report.json compares the INT8 decoder with the float one on
# it (logit cosine, top-1 and greedy agreement). Then build the float vision graph beside the INT8 decoder and run
# that decoder (engine.json names it).
set -euo pipefail
CKPT=$1; VIDEOS=$2; PROMPTS=$3; OUT=${4:-out-int8}
TARGET=${TARGET:-orin-nx-16gb}
videorope-trt calibrate "$CKPT" "$OUT" --precision int8-sq --videos "$VIDEOS" --prompts "$PROMPTS" \
    --target "$TARGET" --no-progress ${CALIBRATE_ARGS:-}
cat "$OUT/calibration/report.json" | python3 -c "import json,sys; r=json.load(sys.stdin); print('held-out accuracy:', r['accuracy'])"
echo "next, on the device: videorope-trt build $OUT --target $TARGET --graphs vision decoder.int8-sq"
