"""What a server runs and the bounds it keeps, as one frozen record built by the command line (or a test)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

MiB = 1 << 20


@dataclass(frozen=True)
class ServeOptions:
    """One model behind one endpoint. `None` means: decided from the model (see each field)."""

    model: str  # artifact directory (or a checkpoint for the torch backend)
    backend: str | None = None  # None: the one the directory calls for (runtime.backends.base.default_backend)
    backend_options: dict = field(default_factory=dict)  # `Session.open`'s keyword arguments
    model_id: str | None = None  # the name /v1/models lists and requests give; None: the directory's name
    #: the most tokens (prompt + video + max_tokens) one request may take; None: the model's own limit (the engines'
    #: plan for tensorrt, the memory plan of the GPU for torch on CUDA, max_position_embeddings otherwise)
    max_context: int | None = None
    prefill_chunk: int | None = None  # None: the memory plan's (as `run`)
    vision_chunk: int | None = None
    max_queue: int = 16  # requests waiting for the model beyond the one it runs; more get 429
    max_video_bytes: int = 512 * MiB  # one video, after base64 decoding
    upload_timeout_s: float = 120.0  # the whole request body must arrive within this
    fetch_timeout_s: float = 30.0  # an http(s) video must arrive within this
    allow_http: bool = False  # fetch http(s) video URLs (off: the server makes no outbound requests)
    media_root: str | None = None  # local paths and file:// URLs are read only under this folder (None: refused)
    fps: float = 2.0  # frames sampled per second of video, as `run`
    max_frames: int | None = None
    token_budget: int | None = None  # most video tokens per request (resolution lowered first)
    default_max_tokens: int = 256  # when a request gives no max_tokens (capped by what the context leaves)
    stream_every: int = 8  # decode steps between streamed updates (and cancellation checks)
    tmp_dir: str | None = None  # where uploaded and fetched videos wait for the model (None: the system's)

    def __post_init__(self):
        for name in ("max_queue", "max_video_bytes", "default_max_tokens", "stream_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"serve: {name} must be >= 1, got {getattr(self, name)}")
        for name in ("upload_timeout_s", "fetch_timeout_s", "fps"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"serve: {name} must be > 0, got {getattr(self, name)}")
        if self.media_root is not None and not Path(self.media_root).is_dir():
            raise ValueError(f"serve: media_root {self.media_root} is not a directory")

    @property
    def name(self) -> str:
        return self.model_id or Path(self.model).resolve().name

    @property
    def max_body_bytes(self) -> int:
        """The largest request body: one base64 video (4 bytes per 3) and room for the messages around it."""
        return self.max_video_bytes * 4 // 3 + 4 + MiB
