"""Task definitions: JSON files read into frozen dataclasses, unknown fields refused.

A task file holds either `items` (questions about needle images or clips the user provides) or `generate` (needles
drawn from a seed: colored shapes carrying digits), and optionally `distractors` (V-NIAH-D: a look-alike of the
needle inserted periodically). The tasks shipped with the package are in `videorope_trt/eval/tasks/`; a user's file
has the same format (docs/evaluation.md, "Task files").

    {"name": "my-niah", "items": [{"needles": ["apple.png"], "question": "Find the frame of a green apple. What is
      written on it?", "options": ["iPod", "iPad", "Mac", "Pear"], "answer": "A", "distractor": "apple2.png"}],
     "distractors": {"period": 16}}
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

from videorope_trt.eval.generators import GENERATORS
from videorope_trt.eval.scoring import LETTERS


@dataclass(frozen=True)
class ItemSpec:
    """One question about needles the user provides (paths relative to the task file)."""

    question: str
    answer: str  # the option letter (multiple choice) or the expected text (free answer)
    options: tuple = ()  # option texts, lettered A, B, C, ... in this order
    needles: tuple = ()  # image or clip files, in their order of appearance in the video
    distractor: str | None = None  # image inserted periodically when the task has `distractors`

    def __post_init__(self):
        for name in ("options", "needles"):
            if isinstance(getattr(self, name), (str, bytes)):
                raise ValueError(f"item {self.question[:40]!r}: {name} received {getattr(self, name)!r}, expected a "
                                 "list")
        object.__setattr__(self, "answer", str(self.answer))
        object.__setattr__(self, "options", tuple(str(o) for o in self.options))
        object.__setattr__(self, "needles", tuple(str(n) for n in self.needles))
        if not self.needles:
            raise ValueError(f"item {self.question[:40]!r}: received no needles, expected at least one image or clip")
        if self.options:
            if not 2 <= len(self.options) <= len(LETTERS):
                raise ValueError(f"item {self.question[:40]!r}: received {len(self.options)} options, expected 2 to "
                                 f"{len(LETTERS)}")
            letters = LETTERS[: len(self.options)]
            if self.answer not in letters:
                raise ValueError(f"item {self.question[:40]!r}: answer {self.answer!r} is not an option letter; "
                                 f"expected one of {', '.join(letters)}")
        elif not str(self.answer).strip():
            raise ValueError(f"item {self.question[:40]!r}: received an empty answer")


@dataclass(frozen=True)
class GenerateSpec:
    """Questions drawn from a seed by the generator `kind` (`eval.generators.GENERATORS`)."""

    kind: str
    items: int = 1  # questions per grid cell
    needles: int = 1  # needles per question (multi_key, counting: the most, ordering)

    def __post_init__(self):
        if self.kind not in GENERATORS:
            raise ValueError(f"generate.kind: received {self.kind!r}, expected one of {', '.join(sorted(GENERATORS))}")
        for name in ("items", "needles"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 16:
                raise ValueError(f"generate.{name}: received {value!r}, expected a whole number 1..16")


@dataclass(frozen=True)
class DistractorSpec:
    """V-NIAH-D: a look-alike of the (first) needle inserted every `period` haystack frames."""

    period: int  # haystack frames from one distractor to the next
    #: generated needles: how close the look-alike's color is to the needle's, 0 (a contrasting color) to 0.9;
    #: it always carries another digit, so the question stays answerable. A user's distractor image is used as is.
    similarity: float = 0.6

    def __post_init__(self):
        period, similarity = self.period, self.similarity
        if not isinstance(period, (int, float)) or isinstance(period, bool) or int(period) != period or period < 1:
            raise ValueError(f"distractors.period: received {period!r}, expected a whole number of frames >= 1")
        if not isinstance(similarity, (int, float)) or isinstance(similarity, bool) or not 0.0 <= similarity <= 0.9:
            raise ValueError(f"distractors.similarity: received {similarity!r}, expected 0 <= similarity <= 0.9")
        object.__setattr__(self, "period", int(period))
        object.__setattr__(self, "similarity", float(similarity))


@dataclass(frozen=True)
class TaskSpec:
    name: str
    description: str = ""
    items: tuple = ()  # ItemSpec
    generate: GenerateSpec | None = None
    distractors: DistractorSpec | None = None
    folder: str = ""  # where relative needle paths start (the task file's folder); not a file field

    def __post_init__(self):
        if not self.name or "/" in self.name or self.name.strip() != self.name:
            raise ValueError(f"task name: received {self.name!r}, expected a non-empty name without '/' or spaces "
                             "at its ends")
        if bool(self.items) == (self.generate is not None):
            raise ValueError(f"task {self.name!r}: expected exactly one of `items` (your needles and questions) "
                             "and `generate` (drawn needles)")
        if self.distractors and self.items and not all(i.distractor for i in self.items):
            raise ValueError(f"task {self.name!r} has `distractors` but not every item names a `distractor` image")

    @property
    def num_items(self) -> int:
        return len(self.items) if self.items else self.generate.items

    def digest(self) -> str:
        """A fingerprint of the definition (with each needle file's bytes): a results file made with another
        definition of a task of the same name is refused."""
        h = hashlib.sha256(json.dumps(to_dict(self), sort_keys=True).encode())
        for item in self.items:
            for name in (*item.needles, item.distractor):
                if name:
                    h.update(resolve(self, name).read_bytes())
        return h.hexdigest()[:16]


def resolve(task: TaskSpec, name: str) -> Path:
    path = Path(name).expanduser()
    path = path if path.is_absolute() else Path(task.folder) / path
    if not path.is_file():
        raise FileNotFoundError(f"task {task.name!r}: needle file {path} not found (paths are relative to the task "
                                "file's folder)")
    return path


def _build(cls, data, where: str):
    """`cls(**data)` with the names checked: unknown fields and missing required ones are errors naming both."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: received {type(data).__name__}, expected a JSON object")
    known = {f.name: f for f in fields(cls) if f.name != "folder"}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}; expected fields: {', '.join(known)}")
    missing = [n for n, f in known.items() if f.default is MISSING and n not in data]
    if missing:
        raise ValueError(f"{where}: missing field(s) {', '.join(missing)}")
    return cls(**data)


def task_from_dict(data: dict, folder=".", where: str = "task") -> TaskSpec:
    data = dict(data) if isinstance(data, dict) else data
    if not isinstance(data, dict):
        raise ValueError(f"{where}: received {type(data).__name__}, expected a JSON object")
    if "items" in data:
        if not isinstance(data["items"], list):
            raise ValueError(f"{where}.items: expected a list of items")
        data["items"] = tuple(_build(ItemSpec, d, f"{where}.items[{i}]") for i, d in enumerate(data["items"]))
    if data.get("generate") is not None:
        data["generate"] = _build(GenerateSpec, data["generate"], f"{where}.generate")
    if data.get("distractors") is not None:
        data["distractors"] = _build(DistractorSpec, data["distractors"], f"{where}.distractors")
    task = _build(TaskSpec, data, where)
    return TaskSpec(**{**{f.name: getattr(task, f.name) for f in fields(task)}, "folder": str(folder)})


def to_dict(task: TaskSpec) -> dict:
    """The task as its file would hold it (without the folder)."""
    def plain(obj):
        if hasattr(obj, "__dataclass_fields__"):
            return {f.name: plain(getattr(obj, f.name)) for f in fields(obj) if f.name != "folder"}
        return [plain(v) for v in obj] if isinstance(obj, tuple) else obj

    return plain(task)


def builtin_folder() -> Path:
    return Path(__file__).parent / "tasks"


def builtin_names() -> list:
    return sorted(p.stem for p in builtin_folder().glob("*.json"))


def load_task(name_or_path) -> TaskSpec:
    """A shipped task by name (`v_niah`, ...) or a task file by path."""
    path = Path(name_or_path)
    if not path.suffix and (builtin_folder() / f"{path.name}.json").is_file() and not path.exists():
        path = builtin_folder() / f"{path.name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"task {name_or_path!r}: no such file and no shipped task of that name; shipped "
                                f"tasks: {', '.join(builtin_names())}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"task file {path} is not valid JSON ({e})") from None
    return task_from_dict(data, path.parent, where=f"task file {path}")


def load_tasks(names) -> list:
    """Tasks by name or path; names must be distinct (they key the results)."""
    tasks = [load_task(n) for n in names]
    seen = [t.name for t in tasks]
    dupes = sorted({n for n in seen if seen.count(n) > 1})
    if dupes:
        raise ValueError(f"tasks: received the name(s) {', '.join(dupes)} more than once; task names must differ")
    return tasks
