"""One model, one worker thread, a bounded FIFO queue in front of it.

A backend holds one KV cache and is not thread-safe, so generations run one at a time, on the worker thread, in
the order they were admitted. The HTTP side never waits on the thread: each job carries an asyncio queue on the
server's event loop, and the worker posts to it (`call_soon_threadsafe`) as text becomes certain:

    ("delta", text)   ("done", Outcome)   ("error", status, message)   ("cancelled",)

Cancellation: the HTTP side sets `job.cancel` when the client goes away. A job still queued is dropped when its
turn comes; a running one stops at its next vision or prefill chunk (the progress hook of `generate`) or its next
streamed step (`on_token`), by raising `Cancelled` out of `generate`. Nothing is left behind: the next generation
allocates its own KV cache.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass

from videorope_trt.serve.chat import AnswerText, Conversation, StopText, prompt_row
from videorope_trt.serve.limits import ContextLimit, chunk_sizes, session_context_limit

log = logging.getLogger("videorope_trt.serve")


class QueueFull(Exception):
    """The queue holds its most: the request is refused (429), not queued."""


class Cancelled(Exception):
    """The client went away: raised out of `generate` by its callbacks, caught by the worker."""


@dataclass(frozen=True)
class Work:
    """What one request asks, checked and admitted."""

    conversation: Conversation
    video: object  # fetch.Fetched or None
    new_tokens: int
    sampling: object  # runtime.sampling.SamplingConfig
    stops: tuple = ()
    fps: float = 2.0
    max_frames: int | None = None
    token_budget: int | None = None


@dataclass(frozen=True)
class Outcome:
    text: str
    finish_reason: str  # "stop" or "length"
    prompt_tokens: int
    completion_tokens: int


class Job:
    def __init__(self, work: Work, loop: asyncio.AbstractEventLoop):
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.work, self.loop = work, loop
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancel = threading.Event()
        self.admitted = time.perf_counter()
        self.generated = 0  # answer tokens so far (the worker's count)

    def post(self, *event) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the loop is closed: the server is gone, nobody reads this
            pass


class _CancelBar:
    """`generate`'s progress bar, which checks for cancellation after every vision and prefill chunk."""

    def __init__(self, job: Job):
        self.job = job

    def update(self, n=1):
        if self.job.cancel.is_set():
            raise Cancelled()

    def close(self):
        pass


class Engine:
    """`step_hook(job, step)`, a test hook, runs on the worker thread at each streamed step before the cancellation
    check (a test holds a generation there to cancel it or to fill the queue deterministically)."""

    def __init__(self, session, options, metrics, step_hook=None):
        self.session, self.options, self.metrics, self.step_hook = session, options, metrics, step_hook
        self.limit: ContextLimit = session_context_limit(session, options.max_context)
        self._queue: queue.Queue = queue.Queue(maxsize=options.max_queue)
        self._stopping = threading.Event()
        self._current: Job | None = None
        self._thread: threading.Thread | None = None
        self._depth, self._depth_lock = 0, threading.Lock()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def depth(self) -> int:
        """Jobs admitted and not finished: waiting and running."""
        return self._depth

    def _count(self, change: int) -> None:
        with self._depth_lock:
            self._depth += change
            self.metrics.queue_depth.set(self._depth)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="videorope-engine", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        if self._stopping.is_set():
            raise QueueFull("the server is shutting down")
        self._count(+1)  # before the worker can see it (and count it finished)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self._count(-1)
            raise QueueFull(f"the queue holds its most ({self.options.max_queue} waiting requests); "
                            "retry later") from None

    def stop(self, timeout: float = 30.0) -> None:
        """Refuse queued jobs, cancel the running one, end the thread."""
        self._stopping.set()
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self._finish(job)
                job.post("error", 503, "the server is shutting down")
        if (current := self._current) is not None:
            current.cancel.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    def _finish(self, job: Job) -> None:
        self._count(-1)
        if job.work.video is not None:
            job.work.video.cleanup()

    def _serve(self) -> None:
        while (job := self._queue.get()) is not None:
            self._current = job
            try:
                self._run(job)
            finally:
                self._current = None
                self._finish(job)

    def _run(self, job: Job) -> None:
        outcome = "ok"
        try:
            if job.cancel.is_set():
                raise Cancelled()
            job.post("done", self._generate(job))
        except Cancelled:
            outcome = "cancelled"
            job.post("cancelled")
        except ValueError as e:  # the video or the request, found out only now (e.g. frames fewer than probed)
            outcome = "error"
            job.post("error", 400, str(e))
        except Exception as e:  # noqa: BLE001 - one request's failure must not end the server
            outcome = "error"
            log.exception("generation failed")
            job.post("error", 500, f"generation failed: {type(e).__name__}: {e}")
        self.metrics.requests.labels(outcome).inc()
        self.metrics.tokens.inc(job.generated)

    def _load_video(self, job: Job):
        w = job.work
        if w.video is None:
            return None
        t0 = time.perf_counter()
        video = self.session.load_video(w.video.path, fps=w.fps, max_frames=w.max_frames, token_budget=w.token_budget)
        self.metrics.video_ms.observe((time.perf_counter() - t0) * 1000)
        return video

    def _generate(self, job: Job) -> Outcome:
        from videorope_trt.runtime.generate import GenerationConfig, generate
        from videorope_trt.runtime.streaming import TextStream

        w, session = job.work, self.session
        video = self._load_video(job)
        row = prompt_row(session.tokenizer, w.conversation, session.video_tokens(video))
        if len(row) + w.new_tokens > self.limit.tokens:  # the decoded video came out longer than its metadata said
            raise ValueError(f"the request needs {len(row) + w.new_tokens} tokens of context; the limit is "
                             f"{self.limit.tokens}, {self.limit.source}")
        prefill, vision = chunk_sizes(session, len(row) + w.new_tokens, self.options.prefill_chunk,
                                      self.options.vision_chunk)
        config = GenerationConfig(max_new_tokens=w.new_tokens, prefill_chunk=prefill, vision_chunk=vision,
                                  sampling=w.sampling, sync_every=self.options.stream_every)
        answer = AnswerText(w.stops, lambda text: job.post("delta", text))
        stream = TextStream(session.tokenizer, 0, answer.write)

        def on_token(step, tokens, active):
            if self.step_hook is not None:
                self.step_hook(job, step)
            if job.cancel.is_set():
                raise Cancelled()
            if step == 0:
                self.metrics.ttft.observe(time.perf_counter() - job.admitted)
            job.generated += bool(active[0])
            stream(step, tokens, active)

        try:
            result = generate(session.backend, [row], video, config, on_token=on_token, bar=lambda **_: _CancelBar(job))
        except StopText:
            return Outcome(answer.text, "stop", len(row), job.generated)
        answer.finish(stream.text())
        tm = result.timings
        self.metrics.vision_ms.observe(tm["vision_s"] * 1000)
        if tm["decode_tokens"] > 0:
            self.metrics.decode_rate.observe(tm["decode_tokens"] / max(tm["decode_s"], 1e-9))
        done = answer.stopped or len(result.tokens[0]) < w.new_tokens
        return Outcome(answer.text, "stop" if done else "length", len(row), job.generated)
