"""Which checkpoint a command or backend reads for OUT: one rule everywhere (`--checkpoint`, else the manifest's
source, else OUT itself)."""

import json

import pytest

from videorope_trt.artifact.manifest import FORMAT_VERSION, KIND, checkpoint_of
from videorope_trt.runtime.session import resolve_checkpoint


def _ckpt(path):
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    return path


def _manifest(out, source):
    out.mkdir(parents=True, exist_ok=True)
    data = {"kind": KIND, "format_version": FORMAT_VERSION, "source": {"checkpoint": str(source)}}
    (out / "manifest.json").write_text(json.dumps(data))
    return data


def test_the_manifest_source_comes_before_out_itself(tmp_path):
    source, out = _ckpt(tmp_path / "ckpt"), _ckpt(tmp_path / "out")
    data = _manifest(out, source)
    assert resolve_checkpoint(out) == checkpoint_of(out, data) == source
    assert resolve_checkpoint(out, tmp_path / "given") == tmp_path / "given"


def test_out_itself_when_the_recorded_source_is_gone_or_there_is_no_manifest(tmp_path):
    out = _ckpt(tmp_path / "out")
    assert resolve_checkpoint(out) == out
    _manifest(out, tmp_path / "moved")
    assert resolve_checkpoint(out) == out


def test_neither_is_a_clear_error(tmp_path):
    out = tmp_path / "out"
    _manifest(out, tmp_path / "moved")
    with pytest.raises(FileNotFoundError, match=r"checkpoint recorded in manifest.json \(.*moved\) is not there"):
        resolve_checkpoint(out)
    with pytest.raises(FileNotFoundError, match="pass --checkpoint DIR"):
        resolve_checkpoint(tmp_path / "empty")


def test_manifest_reader_errors(tmp_path):
    from videorope_trt.artifact.manifest import read_manifest

    with pytest.raises(FileNotFoundError, match=r"manifest.json is missing; expected a directory written by"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"manifest.json is not valid JSON"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"kind": "other", "format_version": 1}))
    with pytest.raises(ValueError, match=r"kind='other' format_version=1; expected kind="):
        read_manifest(tmp_path)
