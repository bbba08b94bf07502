"""From a parsed request to admitted `Work`, or a `Problem` with the HTTP status and a message naming what is wrong.

Everything that can refuse a request runs here, before it is queued: the model name, the turn structure, the
sampling options, fetching the video (bounded), probing it (its container's metadata: nothing decoded) and the
context it will take against the model's limit. Runs on a worker thread of the HTTP server (it reads files).
"""

from __future__ import annotations

from videorope_trt.serve.chat import conversation, prompt_row
from videorope_trt.serve.engine import Work
from videorope_trt.serve.fetch import FetchError, FetchLimits, fetch_video
from videorope_trt.serve.limits import check_fits, video_cost


class Problem(Exception):
    """A request refused: `status` (4xx, or 503) and a message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def fetch_limits(options) -> FetchLimits:
    return FetchLimits(options.max_video_bytes, options.fetch_timeout_s, options.allow_http, options.media_root,
                       options.tmp_dir)


def _sampling(request):
    from videorope_trt.runtime.sampling import SamplingConfig

    try:
        return SamplingConfig(request.temperature, request.top_p, request.seed or 0,
                              tuple(request.stop_token_ids or ())), request.stop_strings
    except ValueError as e:
        raise Problem(400, str(e)) from None


def _video_message(error: Exception, fetched, url: str) -> str:
    """The decoder's message without the server's own file names (a temporary file, or the media root's path)."""
    shown = "the video" if url.startswith("data:") else url
    return str(error).replace(str(fetched.path), shown)


def admit(request, session, options, limit) -> Work:
    """The request as `Work` for the engine, or Problem. The caller owns `work.video` (a fetched file) from here."""
    name = options.name
    if request.model != name:
        raise Problem(404, f"model {request.model!r} is not served here; this server serves {name!r}")
    try:
        conv = conversation(request.messages)
    except ValueError as e:
        raise Problem(400, str(e)) from None
    sampling, stops = _sampling(request)
    fps = request.fps or options.fps
    max_frames = request.max_frames or options.max_frames
    try:
        fetched = fetch_video(conv.video_url, fetch_limits(options)) if conv.has_video else None
    except FetchError as e:
        raise Problem(e.status, str(e)) from None
    try:
        cost = None
        if fetched is not None:
            try:
                cost = video_cost(session, fetched.path, fps, max_frames, options.token_budget)
            except (ValueError, FileNotFoundError) as e:
                raise Problem(400, f"video_url: {_video_message(e, fetched, conv.video_url)}") from None
        prompt = len(prompt_row(session.tokenizer, conv, cost.tokens if cost else 0))
        new_tokens = request.new_tokens or max(1, min(options.default_max_tokens, limit.tokens - prompt))
        try:
            check_fits(session, limit, prompt, new_tokens, cost)
        except ValueError as e:
            raise Problem(400, str(e)) from None
    except BaseException:
        if fetched is not None:
            fetched.cleanup()
        raise
    return Work(conv, fetched, new_tokens, sampling, stops, fps, max_frames, options.token_budget)
