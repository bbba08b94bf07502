"""A model ready to answer: an artifact (or, for the torch backend, a checkpoint) opened on one backend, with its
tokenizer and its video preprocessing. The Python API behind `run`, and what evaluation and serving build on.

    session = Session.open("out/", backend="onnxruntime")
    video = session.load_video("clip.mp4")
    answer = session.ask(["What moves in the video?"], video, GenerationConfig(max_new_tokens=64))
    print(answer.texts[0])

The tokenizer and the preprocessor settings come from the directory opened: an artifact carries the checkpoint's
(export copies them), a checkpoint has its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from videorope_trt.runtime.decode_loop import _no_bar
from videorope_trt.runtime.generate import GenerationConfig, generate


@dataclass
class Answer:
    texts: list  # per prompt, the decoded answer
    tokens: list  # per prompt, the generated token ids (stop token excluded)
    prompt_tokens: int  # the padded prompt length
    video_tokens: int
    timings: dict = field(default_factory=dict)  # as `GenerationResult.timings`


def model_dir(path) -> Path:
    """`path` checked to be an artifact directory (manifest.json, checked) or a checkpoint (config.json): the
    directory whose tokenizer and preprocessor settings the model uses."""
    from videorope_trt.artifact.manifest import read_manifest

    path = Path(path)
    if (path / "manifest.json").is_file():
        read_manifest(path)  # a manifest this version reads, or the error that says to export again
        return path
    if (path / "config.json").is_file():
        return path
    raise FileNotFoundError(f"{path}: expected an artifact directory (manifest.json, written by "
                            "`videorope-trt export`) or a checkpoint directory (config.json)")


class Session:
    """One backend with the tokenizer and preprocessing of its model."""

    def __init__(self, backend, tokenizer, processor, source: Path):
        self.backend, self.tokenizer, self.processor, self.source = backend, tokenizer, processor, Path(source)

    @classmethod
    def open(cls, path, backend: str | None = None, **options) -> "Session":
        """Open `path` (an artifact directory; for the torch backend also a checkpoint) on `backend` with the
        backend's options; with no backend named, the one `default_backend` picks (an artifact's engines first)."""
        from videorope_trt.media.prompt import load_tokenizer_json
        from videorope_trt.media.video import ProcessorConfig
        from videorope_trt.runtime.backends.base import default_backend, open_backend

        source = model_dir(path)
        backend = backend or default_backend(path, options.get("target"))[0]
        return cls(open_backend(backend, path, **options), load_tokenizer_json(source),
                   ProcessorConfig.from_checkpoint(source), source)

    @property
    def info(self):
        return self.backend.info

    def load_video(self, path, *, fps: float | None = 2.0, max_frames=None, start=None, end=None, token_budget=None,
                   allow_truncated: bool = False):
        """Frames sampled and preprocessed as the model's processor does (`media.video.load_video`; a file cut
        short is refused unless `allow_truncated`)."""
        from videorope_trt.media.video import load_video

        return load_video(path, fps=fps, max_frames=max_frames, start=start, end=end, token_budget=token_budget,
                          processor=self.processor, allow_truncated=allow_truncated)

    def video_tokens(self, video) -> int:
        from videorope_trt.media.prompt import video_token_count

        return 0 if video is None else video_token_count(video.grid_thw, self.info.spatial_merge_size)

    def prompt_rows(self, prompts, video=None) -> list:
        """Token ids of each prompt as a one-turn chat about the video (its placeholder tokens expanded)."""
        from videorope_trt.media.prompt import prompt_ids

        if isinstance(prompts, str):
            raise ValueError("prompts: expected a list of strings, got one string")
        n = self.video_tokens(video)
        return [prompt_ids(self.tokenizer, p, n) for p in prompts]

    def ask(self, prompts, video=None, config: GenerationConfig = GenerationConfig(), on_token=None,
            bar=_no_bar) -> Answer:
        """Answer every prompt about one shared video (or none)."""
        rows = self.prompt_rows(prompts, video)
        result = generate(self.backend, rows, video, config, on_token=on_token, bar=bar)
        texts = [self.tokenizer.decode(ids, skip_special_tokens=True) for ids in result.tokens]
        return Answer(texts, result.tokens, result.prompt_length, self.video_tokens(video), result.timings)
