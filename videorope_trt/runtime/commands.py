"""`videorope-trt run` (answer prompts about a video, streamed) and `videorope-trt bench` (speed and memory).

OUT is an artifact directory (manifest.json, ONNX graphs, engines) or, for the torch backend, a checkpoint.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def _add_common(p) -> None:
    p.add_argument("out", metavar="OUT", help="artifact directory (or a checkpoint directory for --backend torch)")
    p.add_argument("--backend", default="torch", help="torch, onnxruntime or tensorrt (default torch)")
    p.add_argument("--checkpoint", help="checkpoint directory (tokenizer, preprocessor, torch weights); default: "
                   "OUT if it holds config.json, else the checkpoint recorded in OUT/manifest.json")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when available)")
    p.add_argument("--dtype", default="float32", help="torch backend weights: float32, float16 or bfloat16")
    p.add_argument("--target", default=None, help="tensorrt backend: engines/<target> under OUT")
    p.add_argument("--prefill-chunk", type=int, default=2048, help="tokens per prefill call (default 2048)")
    p.add_argument("--vision-chunk", type=int, default=8, help="temporal slices per vision-encoder call (default 8)")
    p.add_argument("--max-context", type=int, default=None, help="KV cache capacity in tokens (default: prompt + new tokens)")


def add_arguments(parser, name: str) -> None:
    _add_common(parser)
    if name == "run":
        parser.add_argument("--video", help="video file (any container/codec FFmpeg reads)")
        parser.add_argument("--prompt", action="append", required=True,
                            help="question about the video; repeat for a batch sharing one vision encoding")
        parser.add_argument("--fps", type=float, default=2.0, help="frames sampled per second (default 2)")
        parser.add_argument("--max-frames", type=int, default=None)
        parser.add_argument("--token-budget", type=int, default=None, help="most video tokens in the context")
        parser.add_argument("--start", type=float, default=None, help="start of the time range, seconds")
        parser.add_argument("--end", type=float, default=None, help="end of the time range, seconds")
        parser.add_argument("--max-new-tokens", type=int, default=128)
        parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
        parser.add_argument("--top-p", type=float, default=1.0)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--stop", type=int, action="append", default=[], help="extra stop token id (repeatable)")
        parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    else:
        parser.add_argument("--contexts", default="8k", help="comma-separated context lengths, e.g. 8k,16k,32k,64k")
        parser.add_argument("--decode-tokens", type=int, default=64, help="tokens decoded per context (default 64)")
        parser.add_argument("--frame-size", type=int, default=448, help="square frame side in pixels (default 448)")
        parser.add_argument("--json", default=None, help="result file (default OUT/bench/bench.json)")
        parser.add_argument("--plot", default=None, help="plot file (default OUT/bench/bench.png)")


def resolve_checkpoint(out, given=None) -> Path:
    """The checkpoint directory: --checkpoint, else OUT itself, else what OUT/manifest.json records."""
    if given:
        return Path(given)
    out = Path(out)
    if (out / "config.json").is_file():
        return out
    manifest = out / "manifest.json"
    if manifest.is_file():
        data = json.loads(manifest.read_text())
        source = data.get("checkpoint") or data.get("source", {})
        path = source.get("path") if isinstance(source, dict) else source
        if path and (Path(path) / "config.json").is_file():
            return Path(path)
    raise FileNotFoundError(f"no checkpoint found for {out}: pass --checkpoint DIR (a directory with config.json)")


def default_device(given=None) -> str:
    if given:
        return given
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def open_from_args(args):
    """(backend, checkpoint dir) for the command-line options."""
    from videorope_trt.runtime.backends import open_backend

    ckpt = resolve_checkpoint(args.out, args.checkpoint)
    path = ckpt if args.backend == "torch" and not (Path(args.out) / "config.json").is_file() else args.out
    options = {"device": default_device(args.device), "dtype": args.dtype, "checkpoint": ckpt}
    if args.target:
        options["target"] = args.target
    return open_backend(args.backend, path, **options), ckpt


def _bar(enabled: bool):
    if not enabled:
        from videorope_trt.runtime.generate import _no_bar

        return _no_bar
    from tqdm import tqdm

    return lambda **kw: tqdm(file=sys.stderr, leave=False, **kw)


def _run(args) -> int:
    from videorope_trt.runtime import streaming
    from videorope_trt.runtime.generate import GenerationConfig, generate
    from videorope_trt.runtime.sampling import SamplingConfig

    t0 = time.perf_counter()
    backend, ckpt = open_from_args(args)
    tokenizer = streaming.load_tokenizer(ckpt)
    video, n_video = None, 0
    if args.video:
        from videorope_trt.runtime.video import ProcessorConfig, load_video

        video = load_video(args.video, fps=args.fps, max_frames=args.max_frames, start=args.start, end=args.end,
                           token_budget=args.token_budget, processor=ProcessorConfig.from_checkpoint(ckpt))
        n_video = streaming.video_token_count(video.grid_thw, backend.info.spatial_merge_size)
    rows = [streaming.prompt_ids(tokenizer, p, n_video) for p in args.prompt]
    config = GenerationConfig(
        max_new_tokens=args.max_new_tokens, prefill_chunk=args.prefill_chunk, vision_chunk=args.vision_chunk,
        max_context=args.max_context,
        sampling=SamplingConfig(args.temperature, args.top_p, args.seed, tuple(args.stop)),
    )
    print(f"[run] {args.backend} on {backend.device}: {len(rows)} prompt(s), {n_video} video tokens, "
          f"prompt {max(map(len, rows))} tokens", file=sys.stderr)
    stream = streaming.TextStream(tokenizer, 0)
    result = generate(backend, rows, video, config, on_token=stream, bar=_bar(not args.no_progress))
    print()
    for i, ids in enumerate(result.tokens[1:], start=1):
        print(f"--- prompt {i + 1}: {args.prompt[i]}\n{tokenizer.decode(ids, skip_special_tokens=True)}")
    tm = result.timings
    print(f"[run] done in {time.perf_counter() - t0:.2f} s: first token {tm['ttft_s']:.3f} s, "
          f"{tm['decode_tokens'] / max(tm['decode_s'], 1e-9):.1f} decode tok/s", file=sys.stderr)
    return 0


def run(args, name: str) -> int:
    if name == "run":
        return _run(args)
    from videorope_trt.runtime.bench import run_bench

    return run_bench(args)
