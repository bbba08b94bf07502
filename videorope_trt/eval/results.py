"""results.jsonl: one header line (what the results were made with), then one record per trial, appended and flushed
as each trial ends, so an interrupted run resumes where it stopped. A rerun with another artifact, backend, task set
or video settings would mix incomparable answers: it is refused unless forced (which starts the file over)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from videorope_trt.artifact.atomic import write_atomic


def _differences(old: dict, new: dict, prefix: str = "") -> list:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {json.dumps(a)} in the file, {json.dumps(b)} now")
    return out


class ResultsLog:
    """The records of one results file, keyed by trial id."""

    def __init__(self, path, header: dict, force: bool = False):
        self.path, self.header, self.records = Path(path), json.loads(json.dumps(header)), {}
        if self.path.is_file() and self.path.stat().st_size:
            old, records, complete = self._read()
            diff = _differences(old, self.header)
            if diff and not force:
                raise ValueError(f"{self.path} holds results made otherwise ({'; '.join(diff[:6])}); pass --force to "
                                 "start it over, or give another output folder")
            if not diff:
                self.records = records
                if not complete:  # a record cut short by an interruption: keep the whole lines only
                    self._rewrite()
                return
        self._rewrite()

    def _read(self):
        lines = self.path.read_text().split("\n")
        try:
            first = json.loads(lines[0])
        except json.JSONDecodeError:
            first = None
        if not isinstance(first, dict) or "header" not in first:
            raise ValueError(f"{self.path} is not a results file of `videorope-trt eval` (no header line); give "
                             "another output folder")
        records, complete = {}, True
        for line in lines[1:]:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                complete = False
                continue
            records[record["trial"]] = record
        return first["header"], records, complete and lines[-1] == ""

    def _rewrite(self) -> None:
        lines = [json.dumps({"header": self.header})] + [json.dumps(r) for r in self.records.values()]
        write_atomic(self.path, "\n".join(lines) + "\n")

    def __contains__(self, trial_id) -> bool:
        return trial_id in self.records

    def append(self, record: dict) -> None:
        self.records[record["trial"]] = record
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
