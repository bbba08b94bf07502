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
def atomic_dir(out_dir, keep: tuple = ()):
    """Yield a fresh temporary folder beside `out_dir`; on success it replaces `out_dir`. An old `out_dir` is moved
    aside first and removed once the new one is in place; its entries named in `keep` move into the new one."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; artifacts are for sharing
    try:
        yield tmp
        _replace_dir(tmp, out, keep)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_dir(tmp: Path, out: Path, keep: tuple) -> None:
    if not out.exists():
        os.replace(tmp, out)
        return
    if not out.is_dir():
        raise NotADirectoryError(f"{out}: expected a directory to replace (or nothing), found a file")
    for name in keep:
        if (out / name).exists():
            os.replace(out / name, tmp / name)
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_file(path):
    """Yield a temporary path beside `path`, with its suffix, for a writer that takes a file name (an encoder, a
    compiler); on success it replaces `path`, and it is removed whatever happens."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path, data) -> Path:
    """Write bytes or text to `path` through a temporary file in the same folder."""
    path = Path(path)
    with atomic_file(path) as tmp:
        tmp.write_bytes(data) if isinstance(data, bytes) else tmp.write_text(data)
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
