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
    p.add_argument("--compile", action="store_true",
                   help="torch backend on CUDA: torch.compile the vision blocks and the per-token work (faster after a "
                        "slower first generation)")
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
    """The checkpoint directory: --checkpoint, else what OUT/manifest.json records (as the ONNX Runtime and
    TensorRT backends find it), else OUT itself."""
    from videorope_trt.artifact.manifest import checkpoint_of, read_manifest

    if given:
        return Path(given)
    out = Path(out)
    if (out / "manifest.json").is_file():
        return checkpoint_of(out, read_manifest(out))
    if (out / "config.json").is_file():
        return out
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
    if args.compile:
        if args.backend != "torch":
            raise ValueError(f"--compile applies to the torch backend; got --backend {args.backend}")
        options["compile"] = True
    return open_backend(args.backend, path, **options), ckpt


def _bar(enabled: bool):
    if not enabled:
        from videorope_trt.runtime.generate import _no_bar

        return _no_bar
    from tqdm import tqdm

    return lambda **kw: tqdm(file=sys.stderr, leave=False, **kw)


def _run(args) -> int:
    from videorope_trt.media import prompt
    from videorope_trt.runtime import streaming
    from videorope_trt.runtime.generate import GenerationConfig, generate
    from videorope_trt.runtime.sampling import SamplingConfig

    t0 = time.perf_counter()
    backend, ckpt = open_from_args(args)
    tokenizer = prompt.load_tokenizer_json(ckpt)
    video, n_video = None, 0
    if args.video:
        from videorope_trt.media.video import ProcessorConfig, load_video

        video = load_video(args.video, fps=args.fps, max_frames=args.max_frames, start=args.start, end=args.end,
                           token_budget=args.token_budget, processor=ProcessorConfig.from_checkpoint(ckpt))
        n_video = prompt.video_token_count(video.grid_thw, backend.info.spatial_merge_size)
    rows = [prompt.prompt_ids(tokenizer, p, n_video) for p in args.prompt]
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


def parse_contexts(text: str) -> list:
    """"8k,16k,1000" → [8192, 16384, 1000]."""
    out = []
    for part in filter(None, (p.strip().lower() for p in text.split(","))):
        scale = 1024 if part.endswith("k") else 1
        try:
            out.append(int(float(part.rstrip("k")) * scale))
        except ValueError:
            raise ValueError(f"--contexts: {part!r} is not a length such as 8k or 8192") from None
    if not out or min(out) < 64:
        raise ValueError(f"--contexts: expected lengths >= 64 such as 8k,16k, got {text!r}")
    return out


class SyntheticPatches:
    """Random patch rows made on demand, so a long synthetic video costs no host memory until encoded."""

    def __init__(self, rows: int, width: int, seed: int = 0):
        self.shape = (rows, width)
        self.seed = seed

    def __getitem__(self, index):
        import numpy as np

        start, stop, _ = index.indices(self.shape[0])
        rng = np.random.default_rng([self.seed, start])
        return rng.standard_normal((stop - start, self.shape[1]), dtype=np.float32)


class _Video:
    def __init__(self, pixel_values, grid_thw):
        self.pixel_values, self.grid_thw = pixel_values, grid_thw


def synthetic_video(context: int, text_tokens: int, ckpt, frame_size: int, merge: int):
    """A video whose tokens fill `context` minus the text: (video, frames, video tokens)."""
    pre = json.loads((Path(ckpt) / "preprocessor_config.json").read_text())
    patch, tp = pre.get("patch_size", 14), pre.get("temporal_patch_size", 2)
    side = max(merge, frame_size // patch // merge * merge)
    per_slice = side * side // merge**2
    t = max(1, (context - text_tokens) // per_slice)
    pixels = SyntheticPatches(t * side * side, 3 * tp * patch * patch)
    return _Video(pixels, (t, side, side)), t * tp, t * per_slice


def _peak_memory(device) -> dict:
    import resource

    import torch

    out = {"peak_host_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    if str(device).startswith("cuda"):
        out["peak_device_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        torch.cuda.reset_peak_memory_stats(device)
    return out


def bench_context(backend, tokenizer, ckpt, context: int, args) -> dict:
    from videorope_trt.media import prompt
    from videorope_trt.runtime.generate import GenerationConfig, generate

    text = len(prompt.prompt_ids(tokenizer, "Describe the video.", 0)) + 2
    video, frames, n_video = synthetic_video(context, text, ckpt, args.frame_size, backend.info.spatial_merge_size)
    rows = [prompt.prompt_ids(tokenizer, "Describe the video.", n_video)]
    config = GenerationConfig(max_new_tokens=args.decode_tokens, prefill_chunk=args.prefill_chunk,
                              vision_chunk=args.vision_chunk, max_context=args.max_context, stop_at_eos=False)
    tm = generate(backend, rows, video, config).timings
    return {
        "context": context, "prompt_tokens": len(rows[0]), "frames": frames, **tm,
        "vision_ms_per_frame": 1000 * tm["vision_s"] / frames,
        "prefill_tok_s": len(rows[0]) / tm["prefill_s"],
        "decode_tok_s": tm["decode_tokens"] / max(tm["decode_s"], 1e-9),
        **_peak_memory(backend.device),
    }


def write_bench(results: list, meta: dict, json_path: Path, plot_path: Path) -> None:
    """JSON and a PNG (time split into vision / setup / prefill / decode per context), each via a temporary name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    json_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = json_path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**meta, "results": results}, indent=2) + "\n")
    tmp.replace(json_path)
    fig, ax = plt.subplots(figsize=(7, 4))
    labels = [f"{r['context'] // 1024}k" if r["context"] >= 1024 else str(r["context"]) for r in results]
    bottom = [0.0] * len(results)
    for key in ("vision_s", "setup_s", "prefill_s", "decode_s"):
        vals = [r.get(key, 0.0) for r in results]
        ax.bar(labels, vals, bottom=bottom, label=key[:-2])
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xlabel("context (tokens)")
    ax.set_ylabel("seconds")
    ax.set_title(f"{meta['backend']} on {meta['device']}: where time goes")
    ax.legend()
    plot_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = plot_path.with_name(plot_path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(plot_path)


def _bench(args) -> int:
    from videorope_trt.media import prompt

    contexts = parse_contexts(args.contexts)
    backend, ckpt = open_from_args(args)
    tokenizer = prompt.load_tokenizer_json(ckpt)
    results = []
    for context in contexts:
        r = bench_context(backend, tokenizer, ckpt, context, args)
        print(f"[bench] {context} tokens: first token {r['ttft_s']:.3f} s, vision {r['vision_ms_per_frame']:.2f} ms/frame, "
              f"prefill {r['prefill_tok_s']:.0f} tok/s, decode {r['decode_tok_s']:.1f} tok/s", file=sys.stderr)
        results.append(r)
    bench_dir = Path(args.out) / "bench"
    meta = {"backend": args.backend, "device": str(backend.device), "dtype": args.dtype, "date": time.strftime("%Y-%m-%d"),
            "command": "videorope-trt bench " + " ".join(sys.argv[2:])}
    write_bench(results, meta, Path(args.json or bench_dir / "bench.json"), Path(args.plot or bench_dir / "bench.png"))
    return 0


def run(args, name: str) -> int:
    return _run(args) if name == "run" else _bench(args)
