"""Drawn questions: the answer letter names the option that the needles actually show (read back from each needle's
label and pixels), the options differ, a distractor is a look-alike carrying the lure's digit, and everything
follows the seed."""

import re

import numpy as np
import pytest

from videorope_trt.eval.pictures import COLORS, draw_needle, look_alike_color
from videorope_trt.eval.scoring import LETTERS
from videorope_trt.eval.spec import task_from_dict
from videorope_trt.eval.trials import make_item, prompt_text

SIZE = (64, 48)


def _task(kind, needles=1, distractors=None):
    data = {"name": kind, "generate": {"kind": kind, "items": 1, "needles": needles}}
    return task_from_dict(data | ({"distractors": distractors} if distractors else {}))


def _correct(item) -> str:
    assert len(set(item.options)) == len(item.options) == 4
    return item.options[LETTERS.index(item.answer)]


@pytest.mark.parametrize("seed", range(6))
def test_niah_answer_is_the_needles_digit(seed):
    item = make_item(_task("niah", distractors={"period": 4, "similarity": 0.5}), 0, seed, SIZE, 2.0)
    color, shape = re.fullmatch(r"Find the frame showing a (\w+) (\w+)\. What number is written on it\?",
                                item.question).groups()
    digit = int(_correct(item))
    assert item.needles[0].name == f"{color} {shape} {digit}"
    np.testing.assert_array_equal(item.needles[0].frames[0], draw_needle(SIZE, color, shape, digit))
    # the look-alike: same shape, a color halfway to a contrasting one, the lure option's digit
    lure = int(item.options[LETTERS.index(item.lure)])
    assert item.lure != item.answer
    np.testing.assert_array_equal(item.distractor.frames[0],
                                  draw_needle(SIZE, look_alike_color(color, 0.5), shape, lure))
    assert look_alike_color(color, 0.5) != COLORS[color]
    assert prompt_text(item).endswith("\nD. " + item.options[3] + "\nAnswer with the option's letter from the given "
                                      "choices directly.")


@pytest.mark.parametrize("seed", range(4))
def test_multi_key_answer_lists_the_values_in_order(seed):
    item = make_item(_task("multi_key", needles=3), 0, seed, SIZE, 2.0)
    labels = [p.name.rsplit(" ", 1) for p in item.needles]
    assert len({key for key, _ in labels}) == 1 and labels[0][0] in item.question  # one key
    assert _correct(item) == ", ".join(value for _, value in labels)


@pytest.mark.parametrize("seed", range(6))
def test_counting_answer_counts_the_key(seed):
    item = make_item(_task("counting", needles=3), 0, seed, SIZE, 2.0)
    key = re.fullmatch(r"How many frames show a (\w+ \w+)\?", item.question).group(1)
    assert len(item.needles) == 3  # always the same number of pictures: the video's length tells nothing
    assert int(_correct(item)) == sum(p.name == key for p in item.needles) >= 1


@pytest.mark.parametrize("seed", range(4))
def test_ordering_answer_is_the_order_of_appearance(seed):
    item = make_item(_task("ordering", needles=3), 0, seed, SIZE, 2.0)
    names = [p.name for p in item.needles]
    assert len(set(names)) == 3 and _correct(item) == ", ".join(names)
    assert all(name in item.question for name in names)
    two = make_item(_task("ordering", needles=2), 0, seed, SIZE, 2.0)  # two keys: two orders and two fillers
    assert sorted(o.startswith("only the") for o in two.options) == [False, False, True, True]


def test_items_follow_the_seed():
    task = _task("niah")
    a, b, c = (make_item(task, 0, s, SIZE, 2.0) for s in (3, 3, 4))
    assert (a.question, a.options, a.answer) == (b.question, b.options, b.answer)
    np.testing.assert_array_equal(a.needles[0].frames, b.needles[0].frames)
    assert a.needles[0].digest == b.needles[0].digest != c.needles[0].digest
