"""Answers for many (video, prompt) pairs, one JSON line each, in one process or spread over a Ray cluster.

    items (video, prompt[, id, other fields]) ──skip those already answered──► Answerer (one Session per process
    or per Ray actor) ──► records, appended to OUTPUT.partial as they arrive ──► merged into OUTPUT
    (deduplicated by key, sorted, written to a temporary name and renamed)

Resumable: a rerun reads OUTPUT and OUTPUT.partial and answers only the keys with no answer yet (a record with an
error is tried again). A key is the item's `id`, else its (video, prompt) pair. The single-process path and the Ray
Data path (`batch_ray.results`) run the same `answerer.Answerer`, so their answers are the same; an evaluation
harness passes its own items (`read_items`: JSON lines with an id and any fields it wants back) and reads OUTPUT.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from videorope_trt.artifact.atomic import write_atomic
from videorope_trt.serve.answerer import Answerer, BatchOptions, item_key

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".mpg", ".mpeg", ".ts")
def grid_items(videos_dir, prompts_file) -> list:
    """Every video under `videos_dir` (by suffix, sorted) with every prompt of `prompts_file` (one per line)."""
    videos_dir, prompts_file = Path(videos_dir), Path(prompts_file)
    if not videos_dir.is_dir():
        raise FileNotFoundError(f"--videos {videos_dir} is not a directory")
    if not prompts_file.is_file():
        raise FileNotFoundError(f"--prompts {prompts_file} does not exist; expected a text file, one prompt per line")
    videos = sorted(p for p in videos_dir.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    prompts = [line.strip() for line in prompts_file.read_text().splitlines() if line.strip()]
    if not videos or not prompts:
        raise ValueError(f"no work: {len(videos)} videos under {videos_dir} ({', '.join(VIDEO_SUFFIXES)}), "
                         f"{len(prompts)} prompts in {prompts_file}")
    return [{"video": str(v), "prompt": p} for v in videos for p in prompts]


def read_items(path) -> list:
    """Items from a JSON-lines file: each an object with "video" and "prompt" (and, optionally, "id" and any other
    fields, copied into the record)."""
    items = []
    for n, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not JSON ({e})") from None
        if not (isinstance(item, dict) and isinstance(item.get("video"), str) and isinstance(item.get("prompt"), str)):
            raise ValueError(f"{path}:{n}: expected an object with string fields \"video\" and \"prompt\"")
        items.append(item)
    return items


def partial_path(output) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".partial")


def load_records(path) -> dict:
    """key → record of a JSON-lines file; a line cut short by an interrupted run is skipped. Where a key repeats,
    an answer wins over an error, and otherwise the later line wins."""
    records = {}
    path = Path(path)
    if not path.is_file():
        return records
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        key = record.get("key") if isinstance(record, dict) else None
        if key is None:
            continue
        old = records.get(key)
        if old is None or old.get("error") is not None or record.get("error") is None:
            records[key] = record
    return records


def pending(items, output) -> list:
    """The items (one per key) with no answer in OUTPUT or OUTPUT.partial yet."""
    done = {k for src in (output, partial_path(output)) for k, r in load_records(src).items() if r.get("error") is None}
    todo, seen = [], set()
    for item in items:
        key = item_key(item)
        if key not in done and key not in seen:
            todo.append(item)
            seen.add(key)
    return todo


def merge(output) -> int:
    """OUTPUT.partial merged into OUTPUT (one line per key, sorted by key), atomically; returns the line count."""
    output = Path(output)
    records = load_records(output)
    for key, record in load_records(partial_path(output)).items():
        if key not in records or records[key].get("error") is not None or record.get("error") is None:
            records[key] = record
    lines = "".join(json.dumps(records[k], ensure_ascii=False) + "\n" for k in sorted(records))
    write_atomic(output, lines)
    partial_path(output).unlink(missing_ok=True)
    return len(records)


def _end_torn_line(path: Path) -> None:
    """A run cut short may have left half a line: end it, so that the next record starts a line of its own."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) != b"\n":
            f.write(b"\n")


def run_batch(options: BatchOptions, items, output, ray_address: str | None = None, use_ray: bool = False,
              workers: int | None = None, runtime_env: dict | None = None) -> dict:
    """Answer the items not yet answered in `output`, in this process or (`use_ray`) as a Ray Data job on the
    cluster at `ray_address` (None: the one `ray.init()` finds or starts). Returns counts."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    todo = pending(items, output)
    answered = errors = 0
    if todo:
        if use_ray:
            from videorope_trt.serve.batch_ray import results

            stream = results(options, todo, ray_address, workers, runtime_env)
        else:
            answerer = Answerer(options)
            stream = map(answerer, todo)
        _end_torn_line(partial_path(output))
        with open(partial_path(output), "a") as sink:
            for record in stream:
                sink.write(json.dumps(record, ensure_ascii=False) + "\n")
                sink.flush()  # a record written is a record kept, whatever stops the run later
                answered += 1
                errors += record.get("error") is not None
    lines = merge(output)
    return {"items": len(items), "skipped": len(items) - len(todo), "answered": answered, "errors": errors,
            "lines": lines, "output": str(output)}
