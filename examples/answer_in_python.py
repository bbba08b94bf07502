"""From a checkpoint to an answer with the Python API: export, open the artifact, ask about a video.

    python examples/answer_in_python.py CKPT VIDEO "What happens in the video?" [--out OUT] [--backend onnxruntime]

CKPT is a Qwen2-VL checkpoint folder (Hugging Face layout). The artifact goes to --out (default: `artifact` in the
current directory); `--backend torch` answers from the checkpoint's weights with the artifact's RoPE.
"""

import argparse
from pathlib import Path

from videorope_trt.export.exporter import ExportConfig, export_checkpoint
from videorope_trt.runtime.generate import GenerationConfig
from videorope_trt.runtime.session import Session

ap = argparse.ArgumentParser(description="export a checkpoint, then answer a question about a video")
ap.add_argument("checkpoint")
ap.add_argument("video")
ap.add_argument("question")
ap.add_argument("--out", default="artifact")
ap.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "torch", "tensorrt"))
args = ap.parse_args()

if not (Path(args.out) / "manifest.json").is_file():
    export_checkpoint(args.checkpoint, args.out, ExportConfig(precision="fp32", rotary_form="decomposed"))
session = Session.open(args.out, args.backend)
video = session.load_video(args.video, fps=2.0)
answer = session.ask([args.question], video, GenerationConfig(max_new_tokens=32))
print(answer.texts[0])
print(f"({answer.video_tokens} video tokens, first token after {answer.timings['ttft_s']:.2f} s)")
