"""Drawn tasks: each generator turns a random generator into one multiple-choice question with its needles.

    niah       V-NIAH: one needle, "what number is written on the <color> <shape>?"
    multi_key  V-RULER multi-key multi-value: several needles share a key (color and shape), each carries a value
               (digit); "which numbers, in order of appearance?"
    counting   V-RULER counting: k needles of the key among decoys of other keys (always `needles` pictures in all,
               so the video's length does not give the count away); "how many frames show ...?"
    ordering   V-RULER ordering: several needles of distinct keys; "in what order do they appear?"

With a task's `distractors` (V-NIAH-D) each question also gets a look-alike of its first needle's key: the same shape
in a color `similarity` of the way to the needle's, carrying another digit. For `niah` that digit is one of the wrong
options (the record's `lure`), so a model misled by the distractor picks that letter.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations

from videorope_trt.eval.pictures import COLORS, SHAPES, Picture, draw_needle, look_alike_color
from videorope_trt.eval.scoring import LETTERS

NUM_OPTIONS = 4


@dataclass(frozen=True, eq=False)
class Item:
    """One question, ready to build: its needles (in order of appearance) and its distractor as pictures."""

    question: str
    answer: str  # option letter, or the expected text when there are no options
    options: tuple = ()
    needles: tuple = ()  # Picture
    distractor: Picture | None = None
    lure: str | None = None  # the wrong option a look-alike distractor points to


def _key(rng, avoid_colors=()) -> tuple:
    colors = [c for c in COLORS if c not in avoid_colors]
    return colors[int(rng.integers(len(colors)))], SHAPES[int(rng.integers(len(SHAPES)))]


def _lettered(rng, correct: str, wrong: list) -> tuple:
    """(options, answer letter): the correct text and the wrong ones in a random order."""
    texts = [correct, *wrong]
    order = rng.permutation(len(texts))
    options = tuple(texts[i] for i in order)
    return options, LETTERS[options.index(correct)]


def _picture(size, color, shape, digit=None) -> Picture:
    name = color if isinstance(color, str) else f"rgb{tuple(color)}"
    label = f"{name} {shape}" + ("" if digit is None else f" {digit}")
    return Picture(label, draw_needle(size, color, shape, digit)[None])


def _look_alike(size, key, digit, distractors) -> Picture | None:
    if distractors is None:
        return None
    color, shape = key
    return _picture(size, look_alike_color(color, distractors.similarity), shape, digit)


def niah(rng, size, gen, distractors) -> Item:
    key = _key(rng)
    digits = [int(d) for d in rng.permutation(10)[:NUM_OPTIONS]]
    options, answer = _lettered(rng, str(digits[0]), [str(d) for d in digits[1:]])
    lure = options.index(str(digits[1])) if distractors else None
    return Item(f"Find the frame showing a {key[0]} {key[1]}. What number is written on it?", answer, options,
                (_picture(size, *key, digits[0]),), _look_alike(size, key, digits[1], distractors),
                None if lure is None else LETTERS[lure])


def multi_key(rng, size, gen, distractors) -> Item:
    key, n = _key(rng), gen.needles
    values = [int(d) for d in rng.permutation(10)[:n]]
    correct = ", ".join(map(str, values))
    wrong = []
    while len(wrong) < NUM_OPTIONS - 1:
        candidate = list(values)
        if n > 1 and rng.random() < 0.5:
            candidate = [values[i] for i in rng.permutation(n)]  # the right numbers in a wrong order
        else:
            candidate[int(rng.integers(n))] = int(rng.choice([d for d in range(10) if d not in values]))
        text = ", ".join(map(str, candidate))
        if text != correct and text not in wrong:
            wrong.append(text)
    options, answer = _lettered(rng, correct, wrong)
    spare = next(d for d in range(10) if d not in values)
    return Item(f"Find the frames showing a {key[0]} {key[1]}. Which numbers are written on them, in order of "
                "appearance?", answer, options, tuple(_picture(size, *key, v) for v in values),
                _look_alike(size, key, spare, distractors))


def counting(rng, size, gen, distractors) -> Item:
    key, most = _key(rng), gen.needles
    count = int(rng.integers(1, most + 1))
    decoys = [_picture(size, *_key(rng, avoid_colors=(key[0],))) for _ in range(most - count)]
    pictures = [_picture(size, *key) for _ in range(count)] + decoys
    pictures = [pictures[i] for i in rng.permutation(len(pictures))]
    wrong = [str(c) for c in rng.permutation([c for c in range(0, most + 4) if c != count])[: NUM_OPTIONS - 1]]
    options, answer = _lettered(rng, str(count), wrong)
    return Item(f"How many frames show a {key[0]} {key[1]}?", answer, options, tuple(pictures),
                _look_alike(size, key, None, distractors))


def ordering(rng, size, gen, distractors) -> Item:
    n = max(2, gen.needles)
    colors = [list(COLORS)[i] for i in rng.permutation(len(COLORS))[:n]]
    keys = [(c, SHAPES[int(rng.integers(len(SHAPES)))]) for c in colors]
    names = [f"{c} {s}" for c, s in keys]
    others = [list(p) for p in permutations(names) if list(p) != names]
    picked = [others[i] for i in rng.permutation(len(others))[: NUM_OPTIONS - 1]]
    wrong = [", ".join(p) for p in picked] + [f"only the {name}" for name in names][: NUM_OPTIONS - 1 - len(picked)]
    options, answer = _lettered(rng, ", ".join(names), wrong)
    listed = ", ".join(names[i] for i in rng.permutation(n))
    return Item(f"Find the frames showing a {listed}. In what order do they appear in the video?", answer, options,
                tuple(_picture(size, *k) for k in keys), _look_alike(size, keys[0], None, distractors))


#: generate.kind → generator(rng, size (W, H), GenerateSpec, DistractorSpec | None) -> Item
GENERATORS = {"niah": niah, "multi_key": multi_key, "counting": counting, "ordering": ordering}
