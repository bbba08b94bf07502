"""Writers that never leave a half-written artifact: build under a temporary name beside the target, rename on
success, remove the temporary on failure. And the matching reader of a JSON artifact file."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_dir(out_dir):
    """Yield a fresh temporary folder beside `out_dir`; on success it replaces `out_dir` (any old one is removed)."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; artifacts are for sharing
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_atomic(path, data) -> Path:
    """Write bytes or text to `path` through a temporary file in the same folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data) if isinstance(data, bytes) else tmp.write_text(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_json(path, missing: str) -> dict:
    """The JSON object in `path`; FileNotFoundError("<path> is missing; <missing>") when there is none, ValueError
    when it is not JSON."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; {missing}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None
