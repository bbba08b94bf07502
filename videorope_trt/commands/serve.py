"""`videorope-trt serve` (an OpenAI-compatible HTTP endpoint) and `videorope-trt batch` (answers for many
(video, prompt) pairs as JSON lines), each in one process or, with --ray, spread over a Ray cluster.

The model options are `run`'s (the same backends, chunk sizes from the memory plan); the app, the engine and the
batch job are `videorope_trt.serve`'s.
"""

from __future__ import annotations

import json
import sys

from videorope_trt.commands.run import _add_common, _positive, backend_options, resolve_backend

RAY_HELP = ("run on Ray: on the cluster at ADDRESS (e.g. ray://head:10001 or head:6379), else on the one RAY_ADDRESS "
            "names, else on a new local one; give it after OUT (or as --ray=ADDRESS)")


def _add_video(p) -> None:
    p.add_argument("--fps", type=float, default=2.0, help="frames sampled per second (default 2)")
    p.add_argument("--max-frames", type=_positive, default=None)
    p.add_argument("--token-budget", type=_positive, default=None, help="most video tokens per request")


def _add_serve(p) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model-id", default=None, help="the model's name in /v1/models and requests (default OUT's name)")
    p.add_argument("--max-queue", type=_positive, default=16, help="requests waiting beyond the running one; more get "
                   "429 (default 16)")
    p.add_argument("--max-video-mb", type=_positive, default=512, help="largest video per request (default 512 MiB)")
    p.add_argument("--upload-timeout", type=float, default=120.0, help="seconds for a request body to arrive (408)")
    p.add_argument("--fetch-timeout", type=float, default=30.0, help="seconds for an http(s) video to arrive")
    p.add_argument("--allow-http-urls", action="store_true",
                   help="fetch http(s) video URLs (off by default: the server then makes no outbound requests)")
    p.add_argument("--media-root", default=None, help="serve local paths and file:// URLs under this folder "
                   "(off by default: clients send videos as data: URLs)")
    p.add_argument("--default-max-tokens", type=_positive, default=256, help="max_tokens of a request that gives none")
    p.add_argument("--stream-every", type=_positive, default=8,
                   help="decode steps between streamed updates and cancellation checks (default 8)")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS", help=RAY_HELP)
    p.add_argument("--replicas", type=_positive, default=1, help="with --ray: server replicas, one GPU each")


def _add_batch(p) -> None:
    p.add_argument("--videos", default=None, help="folder of videos: every video with every prompt of --prompts")
    p.add_argument("--prompts", default=None, help="text file, one prompt per line")
    p.add_argument("--items", default=None, help="JSON-lines file of items {\"video\", \"prompt\"[, \"id\", ...]} "
                   "(instead of --videos/--prompts; other fields are copied into the output)")
    p.add_argument("--output", default=None, help="JSON-lines answers (default OUT/batch/answers.jsonl); an existing "
                   "file is resumed: answered items are skipped")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS", help=RAY_HELP)
    p.add_argument("--workers", type=_positive, default=None,
                   help="with --ray: model workers (default: one per GPU of the cluster, else 1)")
    p.add_argument("--max-new-tokens", type=_positive, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stop", type=int, action="append", default=[], help="extra stop token id (repeatable)")


def add_arguments(parser, name: str) -> None:
    _add_common(parser, name)
    _add_video(parser)
    (_add_serve if name == "serve" else _add_batch)(parser)


def serve_options(args):
    from pathlib import Path

    from videorope_trt.serve.options import MiB, ServeOptions

    return ServeOptions(
        model=args.out, backend=resolve_backend(args, "serve"), backend_options=backend_options(args, "serve"),
        model_id=args.model_id,
        max_context=args.max_context, prefill_chunk=args.prefill_chunk, vision_chunk=args.vision_chunk,
        max_queue=args.max_queue, max_video_bytes=args.max_video_mb * MiB, upload_timeout_s=args.upload_timeout,
        fetch_timeout_s=args.fetch_timeout, allow_http=args.allow_http_urls,
        media_root=str(Path(args.media_root).resolve()) if args.media_root else None, fps=args.fps,
        max_frames=args.max_frames, token_budget=args.token_budget, default_max_tokens=args.default_max_tokens,
        stream_every=args.stream_every)


def _serve(args) -> int:
    options = serve_options(args)
    if args.ray is not None:
        from videorope_trt.serve import ray_app

        print(f"[serve] Ray Serve: {args.replicas} replica(s) of {options.name} on http://{args.host}:{args.port}/v1",
              file=sys.stderr)
        try:
            ray_app.run(options, args.host, args.port, args.replicas, args.ray or None)
        except ray_app.ProxyNotStarted as e:
            from videorope_trt.commands import UserError

            raise UserError(str(e)) from None
        return 0
    import uvicorn

    from videorope_trt.serve.app import build_app

    app = build_app(options)
    limit = app.state.engine.limit
    print(f"[serve] {options.name} ({args.backend}) on http://{args.host}:{args.port}/v1: context limit {limit.tokens} "
          f"tokens ({limit.source}), queue {options.max_queue}", file=sys.stderr)
    # connections beyond the queue's worth (and some for /health and /metrics) get 503 from uvicorn itself
    uvicorn.run(app, host=args.host, port=args.port, limit_concurrency=options.max_queue + 32, timeout_keep_alive=5,
                log_level="info")
    return 0


def batch_options(args):
    from videorope_trt.serve.answerer import BatchOptions

    return BatchOptions(
        model=args.out, backend=resolve_backend(args, "batch"), backend_options=backend_options(args, "run"),
        fps=args.fps,
        max_frames=args.max_frames, token_budget=args.token_budget, max_new_tokens=args.max_new_tokens,
        temperature=args.temperature, top_p=args.top_p, seed=args.seed, stop_token_ids=tuple(args.stop),
        prefill_chunk=args.prefill_chunk, vision_chunk=args.vision_chunk, max_context=args.max_context)


def _batch(args) -> int:
    from pathlib import Path

    from videorope_trt.serve.batch import grid_items, read_items, run_batch

    if bool(args.items) == bool(args.videos or args.prompts):
        raise ValueError("give --items FILE, or --videos DIR with --prompts FILE")
    if args.items:
        items = read_items(args.items)
    elif not (args.videos and args.prompts):
        raise ValueError("--videos DIR and --prompts FILE go together")
    else:
        items = grid_items(args.videos, args.prompts)
    output = Path(args.output or Path(args.out) / "batch" / "answers.jsonl")
    summary = run_batch(batch_options(args), items, output, ray_address=args.ray or None, use_ray=args.ray is not None,
                        workers=args.workers)
    print(json.dumps(summary), file=sys.stderr)
    return 0


def run(args, name: str) -> int:
    return _serve(args) if name == "serve" else _batch(args)
