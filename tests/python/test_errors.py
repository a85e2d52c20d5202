"""Every error class from a real bad input: the exception of the LM_* code,
with the library's one-line message naming the file."""
from __future__ import annotations

import json
import os
import shutil

import pytest

import layermap
from layermap import _lib
from layermap._errors import ERRORS, error_for

from conftest import CALIB, model, ROOT


def one_line(e: BaseException) -> str:
    s = str(e)
    assert s and "\n" not in s
    return s


def hf_copy(tmp_path, **config_changes):
    """A copy of stories260K-hf with config.json changed."""
    src = model("stories260K-hf")
    d = tmp_path / "hf"
    d.mkdir()
    for f in ("model.safetensors", "tokenizer.json"):
        os.symlink(os.path.join(src, f), d / f)
    cfg = json.load(open(os.path.join(src, "config.json")))
    cfg.update(config_changes)
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def test_file_error(tmp_path):
    with pytest.raises(layermap.FileError) as e:
        layermap.open(tmp_path / "missing.gguf")
    assert "missing.gguf" in one_line(e.value) and isinstance(e.value, OSError) and e.value.code == 1
    with pytest.raises(layermap.FileError) as e:
        layermap.attribute(model("stories260K.gguf"), str(tmp_path / "nodata.txt"), progress=False)
    assert "nodata.txt" in one_line(e.value)
    m = layermap.Matrix([[0.0] * 7])
    with pytest.raises(layermap.FileError):
        m.to_csv(tmp_path / "no" / "dir" / "x.csv")


def test_corrupt_file_error(tmp_path):
    data = open(model("stories260K.gguf"), "rb").read()
    for cut in (10, len(data) // 2, len(data) - 1):
        (tmp_path / "t.gguf").write_bytes(data[:cut])
        with pytest.raises(layermap.CorruptFileError) as e:
            layermap.open(tmp_path / "t.gguf")
        assert "t.gguf" in one_line(e.value) and e.value.code == 2
    (tmp_path / "bad.csv").write_text("layer,attn.q\n0,1\n")
    with pytest.raises(layermap.CorruptFileError) as e:
        layermap.Matrix.read(tmp_path / "bad.csv")
    assert "bad.csv" in one_line(e.value)
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(layermap.CorruptFileError, match="line 2"):
        layermap.attribute(model("stories260K.gguf"), tmp_path / "bad.jsonl", progress=False)


def test_unsupported_error(tmp_path):
    d = hf_copy(tmp_path, rope_scaling={"rope_type": "yarn", "factor": 2.0})
    with pytest.raises(layermap.UnsupportedError) as e:
        layermap.open(d)
    assert "config.json" in one_line(e.value) and "yarn" in str(e.value)
    shutil.rmtree(d)
    d = hf_copy(tmp_path, model_type="t5", architectures=["T5ForConditionalGeneration"])
    with pytest.raises(layermap.UnsupportedError) as e:
        layermap.open(d)
    assert "config.json" in one_line(e.value)


def test_shape_error():
    with pytest.raises(layermap.ShapeError) as e:
        layermap.diff(model("stories260K-hf"), str(ROOT / "tests" / "data" / "tiny-llama-untied"), progress=False)
    assert "stories260K-hf" in one_line(e.value) and isinstance(e.value, ValueError) and e.value.code == 6


def test_encoding_error(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"fine text\nthen \xc3\x28 broken\n")
    with pytest.raises(layermap.EncodingError) as e:
        layermap.attribute(model("stories260K.gguf"), tmp_path / "bad.txt", progress=False)
    assert "bad.txt" in one_line(e.value) and "offset 15" in str(e.value) and e.value.code == 7
    with pytest.raises(layermap.EncodingError, match="texts\\[1\\]"):
        layermap.attribute(model("stories260K.gguf"), ["fine", "bad \udcff byte"], progress=False)
    with pytest.raises(layermap.EncodingError):
        layermap.ppl(model("stories260K.gguf"), b"bytes \xff here", progress=False)
    with pytest.raises(layermap.EncodingError):
        layermap.tokenize(model("stories260K.gguf"), b"\xfe")


def test_argument_error(tmp_path):
    with pytest.raises(layermap.ArgumentError) as e:
        layermap.attribute(model("stories260K.gguf"), "", progress=False)
    assert "no sequence" in one_line(e.value) and isinstance(e.value, ValueError) and e.value.code == 5
    with pytest.raises(layermap.ArgumentError, match=r"ids\[0\]\[1\]"):
        layermap.attribute(model("stories260K.gguf"), [[1, 512, 3]], progress=False)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(layermap.ArgumentError, match="empty"):
        layermap.ppl(model("stories260K.gguf"), tmp_path / "empty.txt", progress=False)


def test_out_of_memory_error():
    """Fault injection (the library's own, tests/ use it): the next allocation fails."""
    _lib.lib.lm_fault_arm.argtypes = [__import__("ctypes").c_long]
    _lib.lib.lm_fault_arm(1)
    try:
        with pytest.raises(layermap.OutOfMemoryError) as e:
            layermap.open(model("stories260K.gguf"))
    finally:
        _lib.lib.lm_fault_arm(0)
    assert isinstance(e.value, MemoryError) and e.value.code == 4
    with layermap.open(model("stories260K.gguf")) as m:  # and all is well after
        assert m.n_layers == 5


def test_canceled_error():
    """A progress callback that returns False stops the call: CanceledError naming the method."""
    calls = []

    def stop(done, total, what):
        calls.append(done)
        return False
    with pytest.raises(layermap.CanceledError) as e:
        layermap.attribute(model("stories260K.gguf"), str(CALIB), seq_len=32, progress=stop)
    assert "canceled" in one_line(e.value) and e.value.code == 9
    assert calls


def test_every_code_has_its_class():
    """InternalError has no real input that raises it (it marks a bug): the mapping is checked here."""
    for code, cls in ERRORS.items():
        e = error_for(code, "x: y")
        assert type(e) is cls and e.code == code and str(e) == "x: y" and isinstance(e, layermap.Error)
        assert _lib.lib.lm_strerror(code)
    assert set(ERRORS) == set(range(1, 10))
    assert type(error_for(99, "new")) is layermap.Error
    assert issubclass(layermap.InternalError, layermap.Error)
