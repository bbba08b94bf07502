"""One item of a batch answered: the options every item shares and the `Answerer` that holds one Session and answers
an item at a time, in the batch's own process (`batch.run_batch`) or as a Ray Data actor (`batch_ray.results`)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

#: test hook for the fault-tolerance tests: the first worker to start an item while this names a file that does not
#: exist yet creates it and ends its own process, as a crashed machine would
CRASH_MARKER_ENV = "VIDEOROPE_TRT_TEST_CRASH_MARKER"


@dataclass(frozen=True)
class BatchOptions:
    """The model and the generation settings of every item (as `videorope-trt run`'s options)."""

    model: str
    backend: str | None = None  # None: the one the directory calls for (runtime.backends.base.default_backend)
    backend_options: dict = field(default_factory=dict)
    fps: float = 2.0
    max_frames: int | None = None
    token_budget: int | None = None
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop_token_ids: tuple = ()
    prefill_chunk: int | None = None
    vision_chunk: int | None = None
    max_context: int | None = None


def item_key(item: dict) -> str:
    return str(item["id"]) if item.get("id") is not None else json.dumps([item["video"], item["prompt"]])


def _crash_if_asked() -> None:
    marker = os.environ.get(CRASH_MARKER_ENV)
    if not marker:
        return
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os._exit(17)


class Answerer:
    """Answers one item at a time with one Session, opened at the first item (in the process that answers)."""

    def __init__(self, options: BatchOptions):
        self.options = options
        self.session = None
        self._video = (None, None)  # the last video loaded: items come grouped by video

    def _load(self, path):
        o = self.options
        if self._video[0] != path:
            self._video = (path, self.session.load_video(path, fps=o.fps, max_frames=o.max_frames,
                                                          token_budget=o.token_budget))
        return self._video[1]

    def _ask(self, item: dict) -> dict:
        from videorope_trt.runtime.generate import GenerationConfig
        from videorope_trt.runtime.sampling import SamplingConfig
        from videorope_trt.runtime.session import Session
        from videorope_trt.serve.limits import chunk_sizes

        o = self.options
        if self.session is None:
            self.session = Session.open(o.model, o.backend, **o.backend_options)
        video = self._load(item["video"])
        rows = self.session.prompt_rows([item["prompt"]], video)
        prefill, vision = chunk_sizes(self.session, o.max_context or len(rows[0]) + o.max_new_tokens,
                                      o.prefill_chunk, o.vision_chunk)
        config = GenerationConfig(max_new_tokens=o.max_new_tokens, prefill_chunk=prefill, vision_chunk=vision,
                                  max_context=o.max_context,
                                  sampling=SamplingConfig(o.temperature, o.top_p, o.seed, tuple(o.stop_token_ids)))
        answer = self.session.ask([item["prompt"]], video, config)
        n = len(answer.tokens[0])
        return {"answer": answer.texts[0], "prompt_tokens": len(rows[0]), "completion_tokens": n,
                "video_tokens": answer.video_tokens, "finish_reason": "length" if n == o.max_new_tokens else "stop"}

    def __call__(self, item: dict) -> dict:
        _crash_if_asked()
        record = {**item, "key": item_key(item)}
        try:
            return {**record, **self._ask(item), "error": None}
        except (ValueError, FileNotFoundError) as e:  # this item's video or prompt; the others go on
            return {**record, "answer": None, "error": str(e)}
