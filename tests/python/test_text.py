"""tokenize, ppl and generate: what the CLI prints."""
from __future__ import annotations

import numpy as np
import pytest

import layermap

from conftest import CALIB, model, run_cli

TEXTS = ["Once upon a time", "Lily and Ben went to the park. \"Hello!\" she said.\n\nThe end.", "café ☕ 123",
         " leading space", ""]


@pytest.mark.parametrize("name", ["stories260K.gguf", "stories260K-hf", "smollm2-135m-tokenizer/tokenizer.json"])
def test_tokenize_equals_cli(cli, name):
    path = model(name)
    for text in TEXTS:
        for bos in (None, False):
            args = ["tokenize", path, text, "--ids"] + (["--no-bos"] if bos is False else [])
            want = [int(x) for x in run_cli(cli, args).stdout.split()]
            got = layermap.tokenize(path, text, add_bos=bos)
            assert got.dtype == np.int32 and got.ndim == 1
            assert got.tolist() == want, (name, text)


def test_tokenize_model_and_detokenize():
    with layermap.open(model("stories260K.gguf")) as m:
        ids = layermap.tokenize(m, "Once upon a time")
        assert ids[0] == m.config["bos_id"]
        assert layermap.detokenize(m, ids[1:]) == "Once upon a time"
        assert layermap.pieces(m, ids[1:2])[0].startswith("▁")
        assert layermap.tokenize(m, "Once".encode()).tolist() == layermap.tokenize(m, "Once").tolist()
        with pytest.raises(TypeError):
            layermap.tokenize(m, 5)
        with pytest.raises(ValueError):
            layermap.detokenize(m, [10**6])


@pytest.mark.parametrize("seq_len,max_tokens", [(512, 1024), (64, 700)])
def test_ppl_equals_cli(cli, seq_len, max_tokens):
    path = model("stories260K.gguf")
    out = run_cli(cli, ["ppl", path, CALIB, "--seq-len", seq_len, "--max-tokens", max_tokens]).stdout.splitlines()
    want = {line.split()[0]: line.split()[1] for line in out}
    r = layermap.ppl(path, str(CALIB), seq_len=seq_len, max_tokens=max_tokens, progress=False)
    assert f"{r.perplexity:.4f}" == want["perplexity"] and f"{r.nll:.6f}" == want["nll/token"]
    assert str(r.tokens) == want["tokens"] and float(r) == r.perplexity
    assert f"{r.tokens} in {r.sequences} sequence" in out[2] and f"{r.predicted} predicted" in out[2]


def test_generate_equals_cli(cli):
    path = model("stories260K.gguf")
    want = [int(x) for x in run_cli(cli, ["generate", path, "Once upon a time", "-n", "24", "--ids"]).stdout.split()]
    with layermap.open(path) as m:
        ids = layermap.generate(m, "Once upon a time", 24, ids=True)
        assert ids.tolist() == want
        text = run_cli(cli, ["generate", path, "Once upon a time", "-n", "24"]).stdout
        assert layermap.generate(m, "Once upon a time", 24) + "\n" == text
        with pytest.raises(ValueError):
            layermap.generate(m, "x", -1)
