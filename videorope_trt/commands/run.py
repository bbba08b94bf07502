"""`videorope-trt run` (answer prompts about a video, streamed) and `videorope-trt bench` (speed and memory).

OUT is an artifact directory (manifest.json, ONNX graphs, engines) or, for the torch backend, a checkpoint. The
prefill and vision chunk sizes default to what the memory plan fits on the device (the engines' plan for
tensorrt); the torch backend compiles on CUDA for `bench` and not for a single `run`, whose one generation would
pay the compile time and get nothing back.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from videorope_trt.serve.limits import DEFAULT_PREFILL_CHUNK, DEFAULT_VISION_CHUNK, chunk_sizes


def _positive(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _add_common(p, name: str) -> None:
    p.add_argument("out", metavar="OUT", help="artifact directory (or a checkpoint directory for --backend torch)")
    p.add_argument("--backend", default=None, choices=("torch", "onnxruntime", "tensorrt"),
                   help="what runs the model (default: an artifact's engines where its TensorRT is installed, else "
                        "ONNX Runtime on its graphs; torch for a checkpoint directory)")
    p.add_argument("--checkpoint", help="torch backend on an artifact: where its checkpoint's weights are now "
                   "(default: where OUT/manifest.json records it; it must be the same checkpoint)")
    p.add_argument("--decoder", default=None, metavar="GRAPH",
                   help="onnxruntime/tensorrt: the decoder graph to run, e.g. decoder.int8-sq (default: onnxruntime "
                        "the export's decoder; tensorrt the one decoder engine engine.json lists)")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when available; onnxruntime: cpu)")
    p.add_argument("--dtype", default=None, choices=("float32", "float16", "bfloat16"),
                   help="torch backend on a checkpoint: weights and cache type (default: bfloat16 on CUDA, float32 on "
                        "the CPU; an artifact's own precision otherwise)")
    p.add_argument("--target", default=None, help="tensorrt backend: engines/<target> under OUT")
    compile_default = "on CUDA" if name == "bench" else "off: one generation never earns back the compile time"
    p.add_argument("--compile", action="store_true", default=None,
                   help=f"torch backend on CUDA: torch.compile the vision blocks and the per-token work (default "
                        f"{compile_default})")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="torch backend: never compile")
    p.add_argument("--split-prefill", action="store_true",
                   help="torch backend on CUDA: prefill attention as two cuDNN attentions merged (measured faster at "
                        "7B with 1024-token chunks, slower at 2B with long ones)")
    p.add_argument("--prefill-chunk", type=_positive, default=None,
                   help="tokens per prefill call (default: the most the memory plan fits on the device)")
    p.add_argument("--vision-chunk", type=_positive, default=None,
                   help=f"temporal slices per vision-encoder call (default: the plan's; {DEFAULT_VISION_CHUNK} "
                        "where none applies)")
    p.add_argument("--max-context", type=_positive, default=None,
                   help="KV cache capacity in tokens (default: prompt + new tokens)")
    p.add_argument("--allow-long-context", action="store_true",
                   help="run past the model's position limit (max_position_embeddings, or what its RoPE scaling "
                        "extends it to), where its answers are not what it was trained to give; without it, a longer "
                        "prompt is an error")


def add_arguments(parser, name: str) -> None:
    _add_common(parser, name)
    if name == "run":
        parser.add_argument("--video", help="video file (any container/codec FFmpeg reads)")
        parser.add_argument("--prompt", action="append", default=[],
                            help="question about the video; repeat for a batch sharing one vision encoding")
        parser.add_argument("--prompt-file", default=None, help="text file, one prompt per line (added to --prompt)")
        parser.add_argument("--fps", type=float, default=2.0, help="frames sampled per second (default 2)")
        parser.add_argument("--max-frames", type=_positive, default=None)
        parser.add_argument("--token-budget", type=_positive, default=None, help="most video tokens in the context")
        parser.add_argument("--start", type=float, default=None, help="start of the time range, seconds")
        parser.add_argument("--end", type=float, default=None, help="end of the time range, seconds")
        parser.add_argument("--allow-truncated-video", action="store_true",
                            help="answer from the frames read when the file ends (or fails to decode) before the "
                                 "frames its container declares (a cut or damaged file); without it, that is an error")
        parser.add_argument("--max-new-tokens", type=_positive, default=128)
        parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
        parser.add_argument("--top-p", type=float, default=1.0)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--stop", type=int, action="append", default=[], help="extra stop token id (repeatable)")
        parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    else:
        parser.add_argument("--contexts", default="8k",
                            help="comma-separated KV cache lengths to fill, e.g. 8k,16k,32k: a synthetic video's "
                                 "prompt takes each, less --decode-tokens (default 8k)")
        parser.add_argument("--decode-tokens", type=_positive, default=64,
                            help="tokens decoded per context (default 64)")
        parser.add_argument("--frame-size", type=_positive, default=448,
                            help="square frame side in pixels (default 448)")
        parser.add_argument("--json", default=None, help="result file (default OUT/bench/bench.json)")
        parser.add_argument("--plot", default=None, help="plot file (default OUT/bench/bench.png)")


def resolve_backend(args, name: str) -> str:
    """--backend, else the one the directory calls for (`default_backend`), said on stderr; stored in `args`."""
    if args.backend is None:
        from videorope_trt.runtime.backends.base import default_backend

        args.backend, why = default_backend(args.out, args.target)
        print(f"[{name}] backend {args.backend}: {why} (--backend picks another)", file=sys.stderr)
    return args.backend


def backend_options(args, name: str) -> dict:
    """The backend's options from the command line: only those given, so that a backend refuses what it lacks."""
    torch_only = {"dtype": args.dtype, "compile": args.compile, "split_prefill": args.split_prefill or None,
                  "checkpoint": args.checkpoint}
    if args.backend != "torch":
        given = [f"--{k.replace('_', '-')}" for k, v in torch_only.items() if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)} applies to the torch backend; --backend {args.backend} runs the "
                             "artifact's own graphs, embedding table and precision")
    elif args.decoder is not None:
        raise ValueError("--decoder applies to the onnxruntime and tensorrt backends (the torch backend runs the "
                         "checkpoint's model)")
    options = {"device": args.device, "target": args.target, "decoder": args.decoder, **torch_only}
    if args.backend == "torch" and args.compile is None and name == "run":
        options["compile"] = False
    return {k: v for k, v in options.items() if v is not None}


def _bar(enabled: bool):
    if not enabled:
        from videorope_trt.runtime.decode_loop import _no_bar

        return _no_bar
    from tqdm import tqdm

    return lambda **kw: tqdm(file=sys.stderr, leave=False, **kw)


def _prompts(args) -> list:
    prompts = list(args.prompt)
    if args.prompt_file:
        path = Path(args.prompt_file)
        if not path.is_file():
            raise FileNotFoundError(f"--prompt-file {path} does not exist; expected a text file, one prompt per line")
        prompts += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise ValueError("no prompt: give --prompt TEXT (repeatable) or --prompt-file FILE")
    return prompts


def _run(args) -> int:
    from videorope_trt.runtime import streaming
    from videorope_trt.runtime.generate import GenerationConfig
    from videorope_trt.runtime.sampling import SamplingConfig
    from videorope_trt.runtime.session import Session

    t0 = time.perf_counter()
    prompts = _prompts(args)
    session = Session.open(args.out, resolve_backend(args, "run"), **backend_options(args, "run"))
    video = None
    if args.video:
        video = session.load_video(args.video, fps=args.fps, max_frames=args.max_frames, start=args.start,
                                   end=args.end, token_budget=args.token_budget,
                                   allow_truncated=args.allow_truncated_video)
        if video.truncated:
            print(f"[run] warning: {video.truncated}; answering from those (--allow-truncated-video)", file=sys.stderr)
    rows = session.prompt_rows(prompts, video)
    context = args.max_context or max(map(len, rows)) + args.max_new_tokens
    prefill, vision = chunk_sizes(session, context, args.prefill_chunk, args.vision_chunk)
    config = GenerationConfig(max_new_tokens=args.max_new_tokens, prefill_chunk=prefill, vision_chunk=vision,
                              max_context=args.max_context, allow_long_context=args.allow_long_context,
                              sampling=SamplingConfig(args.temperature, args.top_p, args.seed, tuple(args.stop)))
    print(f"[run] {args.backend} on {session.backend.device}: {len(rows)} prompt(s), {session.video_tokens(video)} "
          f"video tokens, prompt {max(map(len, rows))} tokens, prefill chunks of {prefill}", file=sys.stderr)
    stream = streaming.TextStream(session.tokenizer, 0)
    answer = session.ask(prompts, video, config, on_token=stream, bar=_bar(not args.no_progress))
    stream.finish()
    print()
    for i, text in enumerate(answer.texts[1:], start=1):
        print(f"--- prompt {i + 1}: {prompts[i]}\n{text}")
    tm = answer.timings
    print(f"[run] done in {time.perf_counter() - t0:.2f} s: first token {tm['ttft_s']:.3f} s, "
          f"{tm['decode_tokens'] / max(tm['decode_s'], 1e-9):.1f} decode tok/s", file=sys.stderr)
    return 0


def _host_memory() -> int:
    """Bytes of memory this machine has (what a CPU run is planned against)."""
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _plan_precision(session, args) -> str:
    """The precision the memory plan counts: the decoder graph's for an artifact's graphs, the torch dtype's size."""
    backend = session.backend
    if backend.name == "torch":
        import torch

        return "fp32" if backend.dtype == torch.float32 else "fp16"  # bf16 has fp16's sizes
    from videorope_trt.artifact.manifest import read_manifest

    graphs = read_manifest(args.out)["graphs"]
    return graphs[args.decoder or "decoder"]["precision"]


def memory_limit(session, args) -> tuple:
    """(the longest context this device's memory plan holds, what plan that is), before anything is allocated."""
    from videorope_trt.build.plan import PlanRequest, plan_memory
    from videorope_trt.build.presets import device_preset, host_preset

    backend = session.backend
    plan = getattr(backend, "plan", None)
    if plan is not None:  # engines: the plan they were built for
        return plan.max_context, f"the memory plan the engines were built for ({plan.target})"
    if str(backend.device).startswith("cuda"):
        import torch

        props = torch.cuda.get_device_properties(backend.device)
        preset = device_preset(props.name, props.total_memory, f"{props.major}.{props.minor}")
    else:
        preset = host_preset(_host_memory())
    chunk = min(args.prefill_chunk or DEFAULT_PREFILL_CHUNK, session.info.max_positions)  # calls never pass it
    request = PlanRequest(precision=_plan_precision(session, args), runtime=backend.name, prefill_chunk=chunk,
                          frame_size=(args.frame_size, args.frame_size))
    plan = plan_memory(session.info, preset, request)
    return plan.capacity_context, f"the memory plan for {preset.description}, {preset.memory_bytes / 2**30:.1f} GiB"


def check_contexts(session, args, contexts) -> None:
    """Refuse every context the model's positions or the device's memory cannot hold, before any is run (the
    positions first: they need no plan)."""

    def refuse_beyond(limit: int, what: str) -> None:
        for context in contexts:
            tokens = max(context, args.max_context or 0)  # a --max-context cache is allocated whatever the prompt
            if tokens > limit:
                asked = f"a context of {context} tokens" if tokens == context else f"--max-context {tokens}"
                raise ValueError(f"{asked} is beyond {what}: {limit} tokens; bench contexts up to {limit}")

    if not args.allow_long_context:
        refuse_beyond(session.info.context_limit, "the model's position limit (max_position_embeddings)")
    refuse_beyond(*memory_limit(session, args))


def _bench(args) -> int:
    from videorope_trt.runtime import benchmark
    from videorope_trt.runtime.generate import GenerationConfig
    from videorope_trt.runtime.session import Session

    contexts = benchmark.parse_contexts(args.contexts)
    session = Session.open(args.out, resolve_backend(args, "bench"), **backend_options(args, "bench"))
    check_contexts(session, args, contexts)
    results = []
    for context in contexts:
        prefill, vision = chunk_sizes(session, args.max_context or context, args.prefill_chunk, args.vision_chunk)
        config = GenerationConfig(max_new_tokens=args.decode_tokens, prefill_chunk=prefill, vision_chunk=vision,
                                  max_context=args.max_context, allow_long_context=args.allow_long_context)
        r = benchmark.bench_context(session, context, args.frame_size, config)
        print(f"[bench] {context} tokens: first token {r['ttft_s']:.3f} s, vision {r['vision_ms_per_frame']:.2f} "
              f"ms/frame, prefill {r['prefill_tok_s']:.0f} tok/s, decode {r['decode_tok_s']:.1f} tok/s", flush=True)
        results.append({**r, "prefill_chunk": prefill, "vision_chunk": vision})
    bench_dir = Path(args.out) / "bench"
    meta = {"backend": args.backend, "device": str(session.backend.device),
            "dtype": str(getattr(session.backend, "dtype", None)), "date": time.strftime("%Y-%m-%d"),
            "command": "videorope-trt bench " + " ".join(sys.argv[2:])}
    json_path, plot_path = Path(args.json or bench_dir / "bench.json"), Path(args.plot or bench_dir / "bench.png")
    benchmark.write_bench(results, meta, json_path, plot_path)
    print(f"[bench] wrote {json_path} (results) and {plot_path} (where the time goes)")
    return 0


def run(args, name: str) -> int:
    return _run(args) if name == "run" else _bench(args)
