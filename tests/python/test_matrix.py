"""Matrix: shape, order, normalisation, pandas, files read and written as the
CLI reads and writes them, figures."""
from __future__ import annotations

import numpy as np
import pytest

import layermap
from layermap import Matrix

from conftest import CALIB, model, run_cli, json_without_run_meta


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, cli):
    d = tmp_path_factory.mktemp("cli")
    run_cli(cli, ["attribute", model("stories260K.gguf"), "--data", CALIB, "--seq-len", 64, "--max-tokens", 256,
                  "-m", "grad-weight-signed", "--quiet", "--csv", d / "a.csv", "-o", d / "a.json"])
    run_cli(cli, ["attribute", model("stories260K.gguf"), "--data", CALIB, "--seq-len", 64, "--max-tokens", 256,
                  "-m", "act-stats", "--quiet", "-o", d / "s.json"])
    for norm in ("layer", "module", "global"):
        run_cli(cli, ["plot", d / "a.json", "--norm", norm, "--quiet", "--csv", d / f"a-{norm}.csv"])
    return d


def test_read_cli_files_and_round_trip(cli_files, tmp_path):
    c = Matrix.read(cli_files / "a.csv")
    j = Matrix.read(cli_files / "a.json")
    assert c == j and c.values.shape == (5, 7) and c.values.dtype == np.float64
    assert j.meta["method"] == "grad-weight-signed" and j.meta["model"] == "stories260K" and j.meta["tokens"] == 256
    assert c.meta["model"] == "a" and c.meta["method"] == ""  # a CSV holds only numbers
    # how much data is enough: the JSON's standard errors and split-half come along (not in a CSV)
    assert j.se is not None and j.se.shape == (5, 7) and j.meta["samples"] == 4 and -1 <= j.meta["split_half"] <= 1
    assert c.se is None and "samples" not in c.meta
    j.to_json(tmp_path / "b.json")
    assert json_without_run_meta(tmp_path / "b.json") == json_without_run_meta(cli_files / "a.json")
    c.to_csv(tmp_path / "b.csv")
    assert (tmp_path / "b.csv").read_bytes() == (cli_files / "a.csv").read_bytes()
    s = Matrix.read(cli_files / "s-act-sq.json")
    assert s.layer_extra_name == "block-influence" and s.layer_extra.shape == (5,)
    s.to_json(tmp_path / "s.json")
    assert json_without_run_meta(tmp_path / "s.json") == json_without_run_meta(cli_files / "s-act-sq.json")


def test_normalize_equals_cli(cli_files):
    j = Matrix.read(cli_files / "a.json")
    for norm in ("layer", "module", "global"):
        n = j.normalize(norm)
        assert n is not j and j.meta["norm"] == "none" and n.meta["norm"] == norm
        assert np.array_equal(n.values, Matrix.read(cli_files / f"a-{norm}.csv").values), norm
        assert n.meta["tokens"] == j.meta["tokens"]
    assert np.allclose(np.abs(j.normalize("layer").values).sum(axis=1), 1.0, rtol=1e-12)
    assert np.allclose(np.abs(j.normalize("module").values).sum(axis=0), 1.0, rtol=1e-12)
    assert np.sign(j.normalize("global").values).tolist() == np.sign(j.values).tolist()
    assert j.normalize("none") == j
    with pytest.raises(ValueError):
        j.normalize("rows")
    with pytest.raises(TypeError):
        j.normalize(1)


def test_modules_order_and_indexing(cli_files):
    j = Matrix.read(cli_files / "a.json")
    assert j.modules == ("attn.q", "attn.k", "attn.v", "attn.o", "mlp.up", "mlp.down", "mlp.gate")
    assert j[2, "mlp.up"] == j.values[2, 4] and np.array_equal(j["attn.v"], j.values[:, 2])
    assert j.layers == 5 and j.shape == (5, 7)


def test_to_pandas(cli_files):
    pd = pytest.importorskip("pandas")
    j = Matrix.read(cli_files / "a.json")
    df = j.to_pandas()
    assert df.index.name == "layer" and list(df.index) == list(range(5))
    assert list(df.columns) == list(layermap.MODULES)
    ref = pd.read_csv(cli_files / "a.csv", index_col="layer")
    pd.testing.assert_frame_equal(df, ref, check_exact=True, check_index_type=False)
    assert df.attrs["method"] == "grad-weight-signed"


def test_to_pandas_without_pandas(monkeypatch, cli_files):
    import builtins
    real = builtins.__import__

    def no_pandas(name, *a, **k):
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError("no pandas here")
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_pandas)
    with pytest.raises(ImportError, match="pip install pandas"):
        Matrix.read(cli_files / "a.json").to_pandas()


def test_plot_and_notebook_reprs(cli_files, tmp_path):
    j = Matrix.read(cli_files / "a.json")
    for ext, magic in ((".png", b"\x89PNG"), (".svg", b"<?xml"), (".pdf", b"%PDF")):
        j.plot(tmp_path / f"f{ext}", title="a title", center=0.0)
        assert (tmp_path / f"f{ext}").read_bytes().startswith(magic)
    j.plot(tmp_path / "r.png", vmin=-1.0, vmax=1.0, label_step=2)
    layermap.plot([j, j.normalize("layer")], tmp_path / "grid.png", cols=2)
    assert j._repr_png_().startswith(b"\x89PNG")
    assert j._repr_html_().startswith("<div><img src=\"data:image/png;base64,")
    with pytest.raises(ValueError):
        j.plot(tmp_path / "x.png", vmin=1.0)
    with pytest.raises(TypeError):
        j.plot(tmp_path / "x.png", colour="red")
    with pytest.raises(layermap.Error):
        j.plot(tmp_path / "x.bmp")
    assert not list(tmp_path.glob("x*"))


def test_construct_and_check():
    m = Matrix(np.arange(14).reshape(2, 7), {"method": "mine"})
    assert m.values.dtype == np.float64 and m.meta["method"] == "mine" and m.meta["version"] == layermap.__version__
    with pytest.raises(ValueError):
        Matrix(np.zeros((2, 6)))
    with pytest.raises(ValueError):
        Matrix(np.zeros((2, 7)), {"norm": "rows"})
    nan = Matrix(np.full((1, 7), np.nan))
    assert nan == nan
