"""Which directory a command reads for OUT: the tokenizer and preprocessor are OUT's own (an artifact carries them);
the PyTorch weights of an artifact are the checkpoint its manifest records, else OUT itself."""

import json

import pytest

from videorope_trt.artifact.manifest import FORMAT_VERSION, KIND, checkpoint_of
from videorope_trt.runtime.session import model_dir


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
    assert checkpoint_of(out, data) == source
    assert model_dir(out) == out  # the tokenizer and preprocessor are the artifact's own


def test_out_itself_when_the_recorded_source_is_gone(tmp_path):
    out = _ckpt(tmp_path / "out")
    data = _manifest(out, tmp_path / "moved")
    assert checkpoint_of(out, data) == out


def test_neither_is_a_clear_error(tmp_path):
    out = tmp_path / "out"
    data = _manifest(out, tmp_path / "moved")
    with pytest.raises(FileNotFoundError, match=r"checkpoint recorded in manifest.json \(.*moved\) is not there"):
        checkpoint_of(out, data)
    with pytest.raises(FileNotFoundError, match="expected an artifact directory .* or a checkpoint directory"):
        model_dir(tmp_path / "empty")
    (out / "manifest.json").write_text(json.dumps({"kind": KIND, "format_version": 1}))
    with pytest.raises(ValueError, match=r"format_version=1; expected .* \(export it again with this version\)"):
        model_dir(out)


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
