"""Calibration samples from real videos and prompts, prepared exactly as the runtime prepares its inputs.

    VIDEOS/*.mp4 ── runtime.video.load_video (decode, sample, Qwen2-VL preprocessing; the checkpoint's settings)
    PROMPTS file ── one prompt per line ── runtime.prompt.prompt_ids (chat template, video tokens expanded)
                 ──► Sample(input_ids, pixel_values_videos, video_grid_thw, fps)
    prefill(model, sample): model.positions (rope.batch_positions, with the sampled fps) → model.embed → decoder

The videos are split by file: the first ones calibrate, the last `holdout` ones are only used by the report, so
its figures are measured on videos the scales never saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v")


@dataclass(frozen=True)
class VideoSettings:
    """How videos are sampled (the runtime's `run` options)."""

    fps: float = 2.0
    max_frames: int | None = None
    token_budget: int | None = None


@dataclass(frozen=True)
class Sample:
    video: str  # file name, for the report
    prompt: str
    input_ids: np.ndarray  # (1, L) int64
    pixel_values: np.ndarray  # (t*h*w, C*tp*p*p) float32
    grid_thw: np.ndarray  # (3,) int64, in patches
    fps: float  # the rate frames were actually sampled at

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[1])


def list_videos(video_dir) -> list:
    d = Path(video_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"videos directory {d} does not exist; expected a directory of video files")
    videos = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise ValueError(f"videos directory {d} holds no video file; expected files ending in "
                         f"{', '.join(VIDEO_SUFFIXES)}")
    return videos


def read_prompts(path) -> list:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"prompts file {p} does not exist; expected a text file with one prompt per line")
    prompts = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"prompts file {p} has no prompt; expected one prompt per line")
    return prompts


def split_videos(videos: list, holdout: int) -> tuple:
    """(calibration videos, held-out videos): the last `holdout` files are held out."""
    if holdout < 1:
        raise ValueError(f"holdout: received {holdout}, expected at least 1 held-out video for the report")
    if len(videos) <= holdout:
        raise ValueError(f"{len(videos)} video(s) found, expected more than the {holdout} held out for the report "
                         "(at least one must remain for calibration)")
    return videos[:-holdout], videos[-holdout:]


def make_samples(ckpt_dir, videos: list, prompts: list, settings: VideoSettings, *, prompts_per_video: int = 1,
                 offset: int = 0, bar=None) -> list:
    """One Sample per (video, prompt) pair; video k takes prompts k+offset, k+offset+1, ... (cycling)."""
    from videorope_trt.media import prompt
    from videorope_trt.media.video import ProcessorConfig, load_video

    processor = ProcessorConfig.from_checkpoint(ckpt_dir)
    tokenizer = prompt.load_tokenizer_json(ckpt_dir)
    samples = []
    for k, path in enumerate(videos if bar is None else bar(videos, desc="videos", unit="video")):
        video = load_video(path, fps=settings.fps, max_frames=settings.max_frames,
                           token_budget=settings.token_budget, processor=processor)
        n_video = prompt.video_token_count(video.grid_thw, processor.merge_size)
        for j in range(prompts_per_video):
            text = prompts[(k + offset + j) % len(prompts)]
            ids = np.asarray([prompt.prompt_ids(tokenizer, text, n_video)], dtype=np.int64)
            samples.append(Sample(Path(path).name, text, ids, video.pixel_values,
                                  np.asarray(video.grid_thw, np.int64), float(video.fps)))
    return samples


def _first_prefill(model, sample: Sample):
    """(inputs_embeds, positions, attention_mask) of the sample's whole prompt, as the runtime builds them."""
    import torch

    ids = torch.as_tensor(sample.input_ids)
    grid = torch.as_tensor(sample.grid_thw).reshape(1, 3)
    mask = torch.ones_like(ids)
    with torch.no_grad():
        bp = model.positions(ids, None, grid, mask, fps=sample.fps)
        embeds = model.embed(ids, pixel_values_videos=torch.as_tensor(sample.pixel_values), video_grid_thw=grid)
    return embeds, torch.as_tensor(np.asarray(bp.positions), dtype=torch.float32), mask


def prompt_logits(model, sample: Sample):
    """Logits (1, L, vocab) of the whole prompt, through the model's own positions, embedding and decoder."""
    import torch

    embeds, positions, mask = _first_prefill(model, sample)
    with torch.no_grad():
        logits, _ = model.decoder(embeds, positions, mask)
    return logits


def greedy(model, sample: Sample, max_new_tokens: int):
    """Greedy continuation (N,) of the prompt by the model's own generate loop."""
    import torch

    from videorope_trt.models import greedy_generate

    ids = torch.as_tensor(sample.input_ids)
    grid = torch.as_tensor(sample.grid_thw).reshape(1, 3)
    out = greedy_generate(model, ids, pixel_values_videos=torch.as_tensor(sample.pixel_values),
                          video_grid_thw=grid, max_new_tokens=max_new_tokens, eos_token_id=[], fps=sample.fps)
    return out[0]


def decoder_feed(model, sample: Sample) -> dict:
    """The exported decoder graph's inputs for a first prefill of this sample (no past): numpy arrays."""
    embeds, positions, mask = _first_prefill(model, sample)
    return {"inputs_embeds": embeds.float().numpy(), "positions": positions.numpy(), "attention_mask": mask.numpy()}
