"""The HTTP app: OpenAI-compatible chat completions over one model, built by `build_app(options)`.

    POST /v1/chat/completions   JSON or, with "stream": true, server-sent events (`data: {chunk}\\n\\n` ...,
                                `data: [DONE]\\n\\n`)
    GET  /v1/models             the one model served (its id and context limit)
    GET  /health                200 while the model's worker runs, 503 otherwise
    GET  /metrics               Prometheus text format (`serve.metrics`)

A request is read within a size bound and a time bound (413, 408), parsed strictly (400 naming the field),
admitted against the model's limits (400 naming the limit), queued or refused when the queue is full (429), and
answered by the engine's worker. A client that goes away cancels its generation. No state outlives the app: two
apps in one process share nothing.
"""

# no `from __future__ import annotations` here: FastAPI reads the handlers' annotations (`Request`, imported in
# `build_app`) as objects
import asyncio
import json
import time
from contextlib import asynccontextmanager

from videorope_trt.serve import protocol
from videorope_trt.serve.admission import Problem, admit
from videorope_trt.serve.engine import Engine, Job, QueueFull
from videorope_trt.serve.metrics import Metrics


async def read_body(request, options) -> bytes:
    """The request body, refused past `max_body_bytes` (413) or `upload_timeout_s` (408)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > options.max_body_bytes):
        raise Problem(413, f"the request body ({declared} bytes) is over the server's limit of "
                           f"{options.max_body_bytes} bytes (videos up to {options.max_video_bytes} bytes)")

    async def collect() -> bytes:
        parts, size = [], 0
        async for piece in request.stream():
            size += len(piece)
            if size > options.max_body_bytes:
                raise Problem(413, f"the request body is over the server's limit of {options.max_body_bytes} bytes")
            parts.append(piece)
        return b"".join(parts)

    try:
        return await asyncio.wait_for(collect(), options.upload_timeout_s)
    except asyncio.TimeoutError:
        raise Problem(408, f"the request body did not arrive within {options.upload_timeout_s:g} s") from None


async def _disconnected(request) -> None:
    """Returns once the client has gone (the body is read by then: only a disconnect is left to receive)."""
    while (await request.receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.05)


def _sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def stream_events(job: Job, model: str, include_usage: bool):
    """The answer as chat.completion.chunk events; closing the stream (the client went away) cancels the job."""
    created = int(time.time())
    try:
        yield _sse(protocol.chunk(job.id, model, created, {"role": "assistant", "content": ""}))
        while True:
            event = await job.events.get()
            if event[0] == "delta":
                yield _sse(protocol.chunk(job.id, model, created, {"content": event[1]}))
                continue
            if event[0] == "done":
                outcome = event[1]
                yield _sse(protocol.chunk(job.id, model, created, {}, outcome.finish_reason))
                if include_usage:
                    usage = protocol.usage(outcome.prompt_tokens, outcome.completion_tokens)
                    yield _sse(protocol.chunk(job.id, model, created, usage_record=usage))
            elif event[0] == "error":
                yield _sse(protocol.error_body(event[1], event[2]))
            break
        yield "data: [DONE]\n\n"
    finally:
        job.cancel.set()  # a no-op once the job is done


async def complete(job: Job, model: str, request):
    """The whole answer as one chat.completion; None when the client went away first (the job is cancelled)."""
    from fastapi.responses import JSONResponse

    gone = asyncio.ensure_future(_disconnected(request))
    try:
        while True:
            getter = asyncio.ensure_future(job.events.get())
            done, _ = await asyncio.wait({getter, gone}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                return None
            event = getter.result()
            if event[0] == "done":
                o = event[1]
                return JSONResponse(protocol.completion(job.id, model, o.text, o.finish_reason, o.prompt_tokens,
                                                        o.completion_tokens))
            if event[0] == "error":
                return JSONResponse(protocol.error_body(event[1], event[2]), status_code=event[1])
            if event[0] == "cancelled":
                return None
    finally:
        gone.cancel()
        job.cancel.set()


def open_session(options):
    from videorope_trt.runtime.session import Session

    return Session.open(options.model, options.backend, **options.backend_options)


class _Server:
    """What the routes share: the model's session, its engine, the metrics and the options."""

    def __init__(self, options, session, step_hook=None):
        self.options, self.session = options, session
        self.metrics = Metrics(session.backend.device)
        self.engine = Engine(session, options, self.metrics, step_hook)

    def refuse(self, problem: Problem):
        from fastapi.responses import JSONResponse

        self.metrics.requests.labels("rejected").inc()
        return JSONResponse(protocol.error_body(problem.status, problem.message), status_code=problem.status)

    async def chat(self, request):
        from fastapi.responses import Response, StreamingResponse
        from starlette.concurrency import run_in_threadpool

        options, engine = self.options, self.engine
        try:
            chat = protocol.parse_request(await read_body(request, options))
            work = await run_in_threadpool(admit, chat, self.session, options, engine.limit)
        except Problem as p:
            return self.refuse(p)
        except ValueError as e:
            return self.refuse(Problem(400, str(e)))
        job = Job(work, asyncio.get_running_loop())
        try:
            engine.submit(job)
        except QueueFull as e:
            if work.video is not None:
                work.video.cleanup()
            return self.refuse(Problem(503 if engine.stopping else 429, str(e)))
        if chat.stream:
            include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
            return StreamingResponse(stream_events(job, options.name, include_usage), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        response = await complete(job, options.name, request)
        return response if response is not None else Response(status_code=499)  # nobody is there to read it


def build_app(options, session=None, step_hook=None):
    """The FastAPI app serving `options.model` (opened here unless `session` is given). `step_hook`: the engine's
    test hook (`Engine`)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool

    server = _Server(options, session or open_session(options), step_hook)
    engine = server.engine

    @asynccontextmanager
    async def lifespan(_app):
        engine.start()
        yield
        await run_in_threadpool(engine.stop)

    app = FastAPI(title="videorope-trt", lifespan=lifespan)
    app.state.engine, app.state.metrics, app.state.options = engine, server.metrics, options

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await server.chat(request)

    @app.get("/v1/models")
    async def models():
        return protocol.models_list(options.name, engine.limit.tokens)

    @app.get("/health")
    async def health():
        body = {"status": "ok" if engine.alive else "down", "model": options.name, "queue_depth": engine.depth}
        return JSONResponse(body, status_code=200 if engine.alive else 503)

    @app.get("/metrics")
    async def prometheus():
        body, content_type = server.metrics.render()
        return Response(body, media_type=content_type)

    return app
