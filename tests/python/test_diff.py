"""diff: the same numbers as `layermap diff -m all --csv` for F32, BF16 and
GGUF pairs of stories260K (exactly: the CSV holds round-trip digits), and the
same files when written from Python."""
from __future__ import annotations

import numpy as np
import pytest

import layermap

from conftest import model, run_cli, json_without_run_meta

PAIRS = {
    "f32": ("stories260K-hf", "stories260K-ft-hf"),
    "bf16": ("stories260K-hf-bf16", "stories260K-ft-hf-bf16"),
    "gguf": ("stories260K.gguf", "stories260K-ft.gguf"),
    "q8_0-vs-f32": ("stories260K-q8_0.gguf", "stories260K-ft-hf"),
}


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_diff_equals_cli(cli, tmp_path, pair):
    base, ft = (model(p) for p in PAIRS[pair])
    run_cli(cli, ["diff", base, ft, "-m", "all", "--quiet", "--csv", tmp_path / "d.csv", "-o", tmp_path / "d.json"])
    got = layermap.diff(base, ft, progress=False)
    assert list(got) == list(layermap.DIFF_METRICS)
    for k, m in got.items():
        ref = layermap.Matrix.read(tmp_path / f"d-{k}.csv")
        assert m.values.shape == (5, 7) and m.values.dtype == np.float64
        assert np.array_equal(m.values, ref.values, equal_nan=True), k
        m.to_csv(tmp_path / f"py-{k}.csv")
        assert (tmp_path / f"py-{k}.csv").read_bytes() == (tmp_path / f"d-{k}.csv").read_bytes()
        m.to_json(tmp_path / f"py-{k}.json")
        assert json_without_run_meta(tmp_path / f"py-{k}.json") == json_without_run_meta(tmp_path / f"d-{k}.json")
        assert m.meta["method"] == f"diff.{k}"


def test_diff_options(cli, tmp_path):
    base, ft = model("stories260K-hf"), model("stories260K-ft-hf")
    run_cli(cli, ["diff", base, ft, "-m", "density", "--tol", "0.01", "--quiet", "--csv", tmp_path / "d.csv"])
    with layermap.open(base) as a, layermap.open(ft) as b:
        got = layermap.diff(a, b, metrics=["density"], tol=0.01, threads=1, progress=False)
        assert list(got) == ["density"]
        assert np.array_equal(got["density"].values, layermap.Matrix.read(tmp_path / "d.csv").values)
        r = layermap.diff(a, b, metrics="rank", rank_k=8, progress=False)["rank"]
    run_cli(cli, ["diff", base, ft, "-m", "rank", "--rank-k", "8", "--quiet", "--csv", tmp_path / "r.csv"])
    assert np.array_equal(r.values, layermap.Matrix.read(tmp_path / "r.csv").values)


def test_diff_progress_callback():
    seen = []
    layermap.diff(model("stories260K-hf"), model("stories260K-ft-hf"), metrics=("rel",),
                  progress=lambda done, total, what: seen.append((done, total, what)))
    assert seen and all(0 <= d <= t for d, t, _ in seen)


@pytest.mark.parametrize("kwargs,exc", [
    ({"metrics": ("rel", "nope")}, ValueError), ({"metrics": ()}, ValueError), ({"tol": -1.0}, ValueError),
    ({"tol": "x"}, ValueError), ({"rank_k": 0}, ValueError), ({"threads": 0}, ValueError),
    ({"rank_k": 2.5}, TypeError), ({"metrics": ("rel", "rel")}, ValueError), ({"progress": 3}, TypeError),
])
def test_diff_bad_arguments_before_any_c_call(kwargs, exc):
    # the paths do not exist: a C call would raise FileError, not these
    with pytest.raises(exc):
        layermap.diff("/nonexistent/a", "/nonexistent/b", **kwargs)
