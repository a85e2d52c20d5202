"""attribute: the same matrices as `layermap attribute ... --csv` on
stories260K for several methods (exactly), the same JSON files, every data
form (file, text, list of texts, prompt/completion records, token ids) equal
to the file form the CLI reads, several methods at once, checkpoint/resume."""
from __future__ import annotations

import json

import numpy as np
import pytest

import layermap

from conftest import CALIB, model, run_cli, json_without_run_meta

GGUF = "stories260K.gguf"
# method -> (seq_len, max_tokens, extra CLI args / keyword arguments)
CASES = {
    "grad-weight": (64, 512, [], {}),
    "grad-weight-signed": (64, 512, [], {}),
    "fisher": (64, 512, ["--batch", "2"], {"batch": 2}),
    "grad-norm": (64, 512, [], {}),
    "act-grad": (64, 512, [], {}),
    "ablate": (64, 256, [], {}),
    "ablate-mean": (64, 256, [], {}),
    "ig": (32, 64, ["--steps", "3"], {"steps": 3}),
    "act-stats": (64, 512, [], {}),
}


@pytest.mark.parametrize("method", list(CASES))
def test_attribute_equals_cli(cli, tmp_path, method):
    seq_len, max_tokens, args, kw = CASES[method]
    path = model(GGUF)
    run_cli(cli, ["attribute", path, "--data", CALIB, "-m", method, "--seq-len", seq_len, "--max-tokens", max_tokens,
                  "--quiet", "--csv", tmp_path / "c.csv", "-o", tmp_path / "c.json"] + args)
    got = layermap.attribute(path, str(CALIB), method=method, seq_len=seq_len, max_tokens=max_tokens,
                             progress=False, **kw)
    if method == "act-stats":
        assert isinstance(got, dict) and list(got) == ["act-sq", "wanda"]
        pairs = [(got[k], f"c-{k}") for k in got]
    else:
        assert isinstance(got, layermap.Matrix)
        pairs = [(got, "c")]
    for m, stem in pairs:
        ref = layermap.Matrix.read(tmp_path / f"{stem}.csv")
        assert m.values.shape == (5, 7) and m.values.dtype == np.float64 and m.layers == 5
        assert m.modules == layermap.MODULES
        assert np.array_equal(m.values, ref.values, equal_nan=True), method
        m.to_json(tmp_path / "py.json")
        assert json_without_run_meta(tmp_path / "py.json") == json_without_run_meta(tmp_path / f"{stem}.json"), method
        m.to_csv(tmp_path / "py.csv")
        assert (tmp_path / "py.csv").read_bytes() == (tmp_path / f"{stem}.csv").read_bytes()
        assert m.meta["model"] == "stories260K" and m.meta["tokens"] == max_tokens
        assert m.meta["version"] == layermap.__version__ and m.meta["norm"] == "none"
        assert np.isfinite(m.meta["loss"]) and m.meta["loss"] > 0


def test_several_methods_equal_single_calls():
    path = model(GGUF)
    kw = dict(seq_len=64, max_tokens=256, progress=False)
    with layermap.open(path) as m:
        many = layermap.attribute(m, str(CALIB), method=("fisher", "grad-weight", "act-grad", "wanda"), **kw)
        assert list(many) == ["fisher", "grad-weight", "act-grad", "wanda"]
        for name, mat in many.items():
            alone = layermap.attribute(m, str(CALIB), method=name, **kw)
            assert np.array_equal(mat.values, alone.values), name
            assert mat.meta["method"] == name
        one = layermap.attribute(m, str(CALIB), method=["grad-norm"], **kw)
        assert list(one) == ["grad-norm"]


def test_fallback_equals_attribute_many(monkeypatch):
    """Whether or not the library has lm_attribute_many, a method list gives the same matrices."""
    from layermap import _lib
    kw = dict(seq_len=64, max_tokens=192, progress=False)
    methods = ("grad-weight", "act-sq", "wanda", "ablate")
    with layermap.open(model(GGUF)) as m:
        default = layermap.attribute(m, str(CALIB), method=methods, **kw)
        monkeypatch.setattr(_lib, "has_attribute_many", lambda: False)
        per_method = layermap.attribute(m, str(CALIB), method=methods, **kw)
    assert list(default) == list(per_method) == list(methods)
    for k in methods:
        assert np.array_equal(default[k].values, per_method[k].values), k


def test_data_forms_equal_files(tmp_path):
    """Each in-memory form gives the sequences of the file the CLI would read."""
    path = model(GGUF)
    text = CALIB.read_text()[:3000]
    (tmp_path / "t.txt").write_text(text)
    lines = ["Once upon a time there was a girl.", "Lily liked the park and the big red ball.",
             "The sun was warm and the sky was blue."]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in lines))
    pcs = [{"prompt": "Once upon a", "completion": " time there was a cat."},
           {"prompt": "Lily said", "completion": " hello to her mom."}]
    (tmp_path / "pc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pcs))
    kw = dict(seq_len=64, progress=False)
    with layermap.open(path) as m:
        same = lambda a, b: np.array_equal(a.values, b.values)  # noqa: E731
        file_text = layermap.attribute(m, tmp_path / "t.txt", **kw)
        assert same(layermap.attribute(m, text, **kw), file_text)
        assert same(layermap.attribute(m, text.encode(), **kw), file_text)
        assert same(layermap.attribute(m, str(tmp_path / "t.txt"), **kw), file_text)
        jl = layermap.attribute(m, tmp_path / "t.jsonl", **kw)
        assert same(layermap.attribute(m, lines, **kw), jl)
        assert same(layermap.attribute(m, [{"text": t} for t in lines], **kw), jl)
        ids = [layermap.tokenize(m, t) for t in lines]  # BOS included, as each JSONL line gets
        assert same(layermap.attribute(m, ids, **kw), jl)
        assert same(layermap.attribute(m, [list(map(int, a)) for a in ids], **kw), jl)
        pc = layermap.attribute(m, tmp_path / "pc.jsonl", **kw)
        assert same(layermap.attribute(m, pcs, **kw), pc)
        assert pc.meta["predicted"] < pc.meta["tokens"] - 2  # loss on the completions only
        # 2-D array: rows are sequences
        arr = np.stack([ids[0][:8], ids[1][:8]])
        assert same(layermap.attribute(m, arr, **kw), layermap.attribute(m, [ids[0][:8], ids[1][:8]], **kw))


def test_checkpoint_resume(tmp_path):
    path = model(GGUF)
    kw = dict(seq_len=32, max_tokens=320, progress=False)
    full = layermap.attribute(path, str(CALIB), checkpoint=tmp_path / "ck", **kw)
    again = layermap.attribute(path, str(CALIB), checkpoint=tmp_path / "ck", resume=True, **kw)
    assert np.array_equal(full.values, again.values)
    assert (tmp_path / "ck").exists()


def test_per_param(cli, tmp_path):
    path = model(GGUF)
    run_cli(cli, ["attribute", path, "--data", CALIB, "--seq-len", 64, "--max-tokens", 256, "--per-param", "--quiet",
                  "--csv", tmp_path / "c.csv"])
    got = layermap.attribute(path, str(CALIB), seq_len=64, max_tokens=256, per_param=True, progress=False)
    assert np.array_equal(got.values, layermap.Matrix.read(tmp_path / "c.csv").values)
    assert got.meta["method"] == "grad-weight per param"


@pytest.mark.parametrize("kwargs,exc", [
    ({"method": "nope"}, ValueError), ({"method": []}, ValueError), ({"method": ["fisher", "fisher"]}, ValueError),
    ({"method": [3]}, TypeError), ({"seq_len": 1}, ValueError), ({"seq_len": 64.0}, TypeError),
    ({"max_tokens": -1}, ValueError), ({"batch": 0}, ValueError), ({"steps": 0}, ValueError),
    ({"threads": 0}, ValueError), ({"resume": True}, ValueError), ({"resume": 1}, TypeError),
    ({"checkpoint": 5}, TypeError), ({"progress": "yes"}, TypeError),
])
def test_attribute_bad_arguments_before_any_c_call(kwargs, exc):
    with pytest.raises(exc):
        layermap.attribute("/nonexistent/model.gguf", "some text to score", **kwargs)


@pytest.mark.parametrize("data,exc", [
    ([], ValueError), (42, TypeError), ([1.5, 2.5], ValueError), ([[1, 2], "x"], TypeError),
    ([{"prompt": "a"}], ValueError), ([np.zeros((2, 2), dtype=np.int32)], ValueError),
    ([np.array([1.0, 2.0])], TypeError), ([[1, -2]], ValueError), (np.zeros(3, dtype=np.int32), ValueError),
])
def test_attribute_bad_data_before_any_c_call(data, exc):
    with pytest.raises(exc):
        layermap.attribute("/nonexistent/model.gguf", data)


@pytest.mark.parametrize("compute", ["bf16-ref", "auto"])
def test_compute_equals_cli(cli, tmp_path, compute):
    """compute= gives the CLI's --compute numbers exactly; bf16-ref is within bf16's bounds of f32."""
    path = model(GGUF)
    run_cli(cli, ["attribute", path, "--data", CALIB, "-m", "grad-weight", "--seq-len", 64, "--max-tokens", 512,
                  "--quiet", "--csv", tmp_path / "c.csv", "--compute", compute])
    got = layermap.attribute(path, str(CALIB), method="grad-weight", seq_len=64, max_tokens=512, progress=False,
                             compute=compute)
    ref = layermap.Matrix.read(tmp_path / "c.csv")
    assert np.array_equal(got.values, ref.values, equal_nan=True)
    f32 = layermap.attribute(path, str(CALIB), method="grad-weight", seq_len=64, max_tokens=512, progress=False)
    assert np.max(np.abs(got.values - f32.values)) <= 0.01 * np.max(np.abs(f32.values))


def test_compute_bad_and_bf16():
    path = model(GGUF)
    with pytest.raises(ValueError, match="bf16-ref"):
        layermap.attribute(path, str(CALIB), compute="fp16", progress=False)
    with pytest.raises(TypeError):
        layermap.attribute(path, str(CALIB), compute=16, progress=False)  # type: ignore[arg-type]
    try:  # bf16 runs where the CPU has it, else it is the library's one-line refusal
        m = layermap.attribute(path, str(CALIB), seq_len=64, max_tokens=128, compute="bf16", progress=False)
        assert np.all(np.isfinite(m.values))
    except layermap.UnsupportedError as e:
        assert "bf16" in str(e)
