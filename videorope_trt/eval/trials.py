"""Trials: (task, question, haystack length, depth, seed), each a video to build and a question to ask.

The grid is the papers' one: haystack lengths × needle depths (0 = the start of the haystack, 1 = its end), every
question of every task at every cell, once per seed. Lengths are haystack frames as the model samples them; given in
tokens they are turned into frames with the processor's tokens per temporal slice.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from videorope_trt.eval.generators import GENERATORS, Item
from videorope_trt.eval.scoring import LETTERS
from videorope_trt.eval.spec import TaskSpec, resolve

ANSWER_WITH_LETTER = "Answer with the option's letter from the given choices directly."
ANSWER_SHORT = "Answer the question using a single word or phrase."


@dataclass(frozen=True)
class Grid:
    lengths: tuple = (16, 32)  # haystack frames
    depths: tuple = (0.0, 0.5, 1.0)
    seeds: tuple = (0,)

    def __post_init__(self):
        for name in ("lengths", "depths", "seeds"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
            if not getattr(self, name):
                raise ValueError(f"grid: received no {name}, expected at least one")
        if any(int(n) != n or n < 1 for n in self.lengths):
            raise ValueError(f"grid lengths: received {list(self.lengths)}, expected whole numbers of frames >= 1")
        if any(not 0.0 <= d <= 1.0 for d in self.depths):
            raise ValueError(f"grid depths: received {list(self.depths)}, expected fractions 0 <= depth <= 1")


@dataclass(frozen=True)
class Trial:
    task: str
    item: int  # question index within the task
    frames: int  # haystack frames
    depth: float
    seed: int

    @property
    def id(self) -> str:
        return f"{self.task}/{self.item}/{self.frames}/{self.depth:g}/{self.seed}"


def expand(tasks, grid: Grid) -> list:
    """Every trial of the grid, in a stable order: task, length, depth, seed, question."""
    return [Trial(t.name, i, int(n), float(d), int(s)) for t in tasks for n in grid.lengths for d in grid.depths
            for s in grid.seeds for i in range(t.num_items)]


def frames_for_tokens(tokens: int, size: tuple, processor) -> int:
    """Haystack frames whose visual tokens are at most `tokens` (at least one temporal slice), for frames of size
    (W, H) after the processor's resize."""
    per_slice = processor.tokens_per_slice(*processor.target_size(size[1], size[0]))
    return max(1, int(tokens) // per_slice) * processor.temporal_patch_size


def make_item(task: TaskSpec, index: int, seed: int, size: tuple, fps: float) -> Item:
    """The question `index` of `task` for this seed: drawn (generated tasks), or read from the task's files."""
    if task.generate is not None:
        rng = np.random.default_rng([int(seed), int(index), zlib.crc32(task.name.encode())])
        return GENERATORS[task.generate.kind](rng, size, task.generate, task.distractors)
    from videorope_trt.eval.pictures import read_picture

    spec = task.items[index]
    needles = tuple(read_picture(resolve(task, n), size, fps) for n in spec.needles)
    distractor = read_picture(resolve(task, spec.distractor), size, fps) if task.distractors else None
    return Item(spec.question, spec.answer, spec.options, needles, distractor)


def prompt_text(item: Item) -> str:
    """The question as the papers ask it: options one a line, lettered, then the answer instruction."""
    if not item.options:
        return f"{item.question}\n{ANSWER_SHORT}"
    lines = [f"{LETTERS[i]}. {text}" for i, text in enumerate(item.options)]
    return "\n".join([item.question, *lines, ANSWER_WITH_LETTER])


def insertion_points(slices: int, needles: int, depth: float, period_slices: int | None) -> tuple:
    """(needle points, distractor points): haystack slice indices before which each is inserted.

    Needle i of n goes at ⌊(i + depth) / n · slices⌋, so one needle sits at ⌊depth · slices⌋ as in the V-NIAH
    code and several are spread evenly with depth as their phase. Distractors go before slices period, 2·period, ...
    """
    needle_at = tuple(min(slices, math.floor((i + depth) / needles * slices + 1e-9)) for i in range(needles))
    distractor_at = () if not period_slices else tuple(range(period_slices, slices, period_slices))
    return needle_at, distractor_at
