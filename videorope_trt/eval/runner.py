"""The evaluation loop: every trial's video built (or found in the cache), asked of one deployment or of two on the
same video and prompt, scored, and appended to the results file; then the summary and the heatmaps.

A deployment is an opened `runtime.session.Session` (an artifact on a backend, at its precision) with its generation
settings. Two deployments answer the same trials: their per-trial agreement is the comparison mode's verdict.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from videorope_trt.eval.build import VideoSpec, build_video
from videorope_trt.eval.haystack import open_haystack
from videorope_trt.eval.results import ResultsLog
from videorope_trt.eval.scoring import score
from videorope_trt.eval.summary import summarize, write_outputs
from videorope_trt.eval.trials import Grid, expand, make_item, prompt_text

FORMAT = 1


@dataclass
class Deployment:
    label: str  # the key of its answers in the records ("a", "b")
    session: object  # runtime.session.Session
    config: object  # runtime.generate.GenerationConfig
    description: dict = field(default_factory=dict)  # artifact, backend, options: for the results' header


@dataclass(frozen=True)
class EvalSettings:
    grid: Grid = Grid()
    size: tuple = (448, 252)  # frame (W, H): 16 × 9 merged tokens a frame at Qwen2-VL's patch size, as the papers
    fps: float = 2.0  # the video's rate, which is the model's sampling rate: every frame is seen
    haystack: str | None = None  # a video, a folder of videos, or None for the generated scene
    delete_videos: bool = False  # remove each trial's video once answered (the cache then only spans a run)

    def __post_init__(self):
        width, height = self.size
        if width % 2 or height % 2 or min(width, height) < 16:
            raise ValueError(f"frame size: received {width}x{height}, expected even sides >= 16")
        if not 0 < self.fps <= 60:
            raise ValueError(f"fps: received {self.fps}, expected 0 < fps <= 60")


def _temporal_patch(deployments) -> int:
    sizes = {d.session.processor.temporal_patch_size for d in deployments}
    if len(sizes) != 1:
        raise ValueError(f"the deployments group frames differently (temporal_patch_size {sorted(sizes)}); compare "
                         "artifacts of one model")
    return sizes.pop()


def header(tasks, deployments, settings: EvalSettings, spec: VideoSpec, max_new_tokens: int) -> dict:
    """What the results depend on (the grid is not: a rerun may add lengths, depths or seeds)."""
    return {"format": FORMAT,
            "deployments": {d.label: {**d.description, "variant": d.session.info.variant} for d in deployments},
            "tasks": {t.name: t.digest() for t in tasks},
            "video": {"size": list(settings.size), "fps": settings.fps, "haystack": spec.haystack.describe(),
                      "codec": spec.codec, "temporal_patch_size": spec.temporal_patch_size},
            "generation": {"max_new_tokens": max_new_tokens}}


def _answer(deployment, prompt, video, item) -> dict:
    began = time.perf_counter()
    answer = deployment.session.ask([prompt], video, deployment.config)
    text = answer.texts[0]
    return {"text": text, **score(text, item.answer, item.options, item.lure),
            "seconds": round(time.perf_counter() - began, 3), "video_tokens": answer.video_tokens}


def agreement(a: dict, b: dict) -> dict:
    """Two deployments' answers to one trial: the same answer (the same parsed letter; where neither reply parses,
    the same text, so two different unparsable replies disagree), and the same text."""
    same = a["choice"] == b["choice"] if a["choice"] is not None or b["choice"] is not None else a["text"] == b["text"]
    return {"answer": same, "text": a["text"] == b["text"]}


def run_trial(trial, task, item, spec: VideoSpec, deployments, video_dir: Path, delete: bool = False) -> dict:
    """Build the trial's video, ask every deployment, score: the trial's record."""
    period = task.distractors.period if task.distractors else None
    built = build_video(video_dir, spec, item, frames=trial.frames, depth=trial.depth, period=period, seed=trial.seed)
    prompt, loaded, answers = prompt_text(item), {}, {}
    for d in deployments:
        processor = d.session.processor
        if processor not in loaded:  # one decode per distinct preprocessing
            loaded[processor] = d.session.load_video(built.path, fps=spec.fps)
        answers[d.label] = _answer(d, prompt, loaded[processor], item)
    record = {"trial": trial.id, "task": trial.task, "item": trial.item, "frames": trial.frames, "depth": trial.depth,
              "seed": trial.seed, "video": Path(built.path).name, "video_frames": built.frames,
              "needles": [list(r) for r in built.needles], "distractors": [list(r) for r in built.distractors],
              "question": prompt, "answer": item.answer, "lure": item.lure, "answers": answers}
    if len(deployments) == 2:
        record["agree"] = agreement(*(answers[d.label] for d in deployments))
    if delete:
        for path in (Path(built.path), Path(built.path).with_suffix(".json")):
            path.unlink(missing_ok=True)
    return record


def _bar(total: int, done: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc="eval", unit="trial", file=sys.stderr, disable=not enabled,
                dynamic_ncols=True)


def evaluate(tasks, deployments, settings: EvalSettings, out_dir, *, force: bool = False,
             progress: bool = True) -> dict:
    """Run every trial of the grid not yet in `out_dir/results.jsonl`; write summary.json and the heatmaps.

    Returns the summary (over this grid's trials)."""
    from videorope_trt.media.synthetic import pick_encoder

    if not 1 <= len(deployments) <= 2:
        raise ValueError(f"evaluate: received {len(deployments)} deployments, expected one, or two to compare")
    out_dir = Path(out_dir)
    spec = VideoSpec(tuple(settings.size), float(settings.fps), _temporal_patch(deployments),
                     open_haystack(settings.haystack), pick_encoder())
    head = header(tasks, deployments, settings, spec, deployments[0].config.max_new_tokens)
    log = ResultsLog(out_dir / "results.jsonl", head, force=force)
    by_name, trials = {t.name: t for t in tasks}, expand(tasks, settings.grid)
    todo = [t for t in trials if t.id not in log]
    bar, items = _bar(len(trials), len(trials) - len(todo), progress), {}
    for trial in todo:
        key = (trial.task, trial.item, trial.seed)  # the question does not depend on the length or depth
        if key not in items:
            items[key] = make_item(by_name[trial.task], trial.item, trial.seed, spec.size, spec.fps)
        log.append(run_trial(trial, by_name[trial.task], items[key], spec, deployments, out_dir / "videos",
                             settings.delete_videos))
        bar.update(1)
    bar.close()
    summary = summarize([log.records[t.id] for t in trials], list(by_name), [d.label for d in deployments])
    write_outputs({"header": head, **summary}, out_dir)
    return {"header": head, **summary}
