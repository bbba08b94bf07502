"""Task files: the shipped ones load; a user's file with its own needles loads, resolves paths from its folder and
fingerprints their bytes; unknown and missing fields, and inconsistent definitions, are refused with errors naming
what was received and what was expected."""

import json
import re

import numpy as np
import pytest
from PIL import Image

from videorope_trt.eval.spec import (
    DistractorSpec,
    GenerateSpec,
    builtin_names,
    load_task,
    load_tasks,
    task_from_dict,
    to_dict,
)

SHIPPED = {"v_niah": ("niah", None), "v_niah_d": ("niah", 8), "v_ruler_counting": ("counting", None),
           "v_ruler_multi_key": ("multi_key", None), "v_ruler_ordering": ("ordering", None)}


def test_shipped_tasks_load():
    assert builtin_names() == sorted(SHIPPED)
    for name, (kind, period) in SHIPPED.items():
        task = load_task(name)
        assert task.name == name and task.generate.kind == kind and task.num_items == task.generate.items >= 1
        assert (task.distractors.period if task.distractors else None) == period
        assert task_from_dict(to_dict(task), task.folder).digest() == task.digest()  # the file round-trips


def _user_task(tmp_path, **item):
    for name in ("apple.png", "apple2.png"):
        Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(tmp_path / name)
    data = {"name": "mine", "items": [{"needles": ["apple.png"], "question": "Which fruit?", "options": ["apple",
            "pear"], "answer": "A", "distractor": "apple2.png", **item}], "distractors": {"period": 4}}
    (tmp_path / "mine.json").write_text(json.dumps(data))
    return tmp_path / "mine.json"


def test_user_task_file_resolves_needles_from_its_folder(tmp_path):
    task = load_task(_user_task(tmp_path))
    assert task.items[0].needles == ("apple.png",) and task.distractors == DistractorSpec(period=4, similarity=0.6)
    before = task.digest()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "apple.png")  # same definition, other bytes
    assert load_task(tmp_path / "mine.json").digest() != before


@pytest.mark.parametrize("data, message", [
    ({"name": "x", "generate": {"kind": "niah"}, "colour": 1}, "unknown field(s) colour; expected fields: name, "),
    ({"name": "x", "generate": {"kind": "niah", "item": 2}}, "task.generate: unknown field(s) item"),
    ({"name": "x", "generate": {"kind": "haystack"}}, "generate.kind: received 'haystack', expected one of counting"),
    ({"name": "x", "generate": {"kind": "niah", "items": 0}}, "generate.items: received 0, expected a whole number"),
    ({"name": "x"}, "expected exactly one of `items`"),
    ({"generate": {"kind": "niah"}}, "missing field(s) name"),
    ({"name": "x", "generate": {"kind": "niah"}, "distractors": {"period": 0}}, "distractors.period: received 0"),
    ({"name": "x", "generate": {"kind": "niah"}, "distractors": {"period": 4, "similarity": 1.0}},
     "expected 0 <= similarity <= 0.9"),
    ({"name": "a/b", "generate": {"kind": "niah"}}, "task name: received 'a/b'"),
    ({"name": "x", "items": [{"needles": ["a.png"], "question": "q?", "options": ["1", "2"], "answer": "C"}]},
     "answer 'C' is not an option letter; expected one of A, B"),
    ({"name": "x", "items": [{"needles": [], "question": "q?", "answer": "red"}]}, "received no needles"),
    ({"name": "x", "items": [{"needles": "a.png", "question": "q?", "answer": "red"}]},
     "needles received 'a.png', expected a list"),
    ({"name": "x", "generate": {"kind": "niah", "items": "2"}}, "generate.items: received '2'"),
    ({"name": "x", "generate": {"kind": "niah"}, "distractors": {"period": 2.5}}, "distractors.period: received 2.5"),
    ({"name": "x", "items": [{"needles": ["a.png"], "question": "q?", "answer": "red", "hint": 1}]},
     "task.items[0]: unknown field(s) hint"),
    ({"name": "x", "items": [{"needles": ["a.png"], "question": "q?", "answer": "red"}], "distractors": {"period": 2}},
     "not every item names a `distractor` image"),
])
def test_bad_definitions_are_refused(data, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        task_from_dict(data)


def test_missing_files_and_duplicate_names(tmp_path):
    with pytest.raises(FileNotFoundError, match="no shipped task of that name; shipped tasks: v_niah"):
        load_task("v_nia")
    path = _user_task(tmp_path)
    (tmp_path / "apple.png").unlink()
    with pytest.raises(FileNotFoundError, match="needle file .*apple.png not found"):
        load_task(path).digest()
    with pytest.raises(ValueError, match="received the name\\(s\\) v_niah more than once"):
        load_tasks(["v_niah", "v_niah"])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        load_task(tmp_path / "bad.json")
    assert GenerateSpec("counting", needles=3).needles == 3
    assert DistractorSpec(period=8.0, similarity=0).period == 8 and isinstance(DistractorSpec(8.0).period, int)
