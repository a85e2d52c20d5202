"""No leak over 200 open/attribute/close cycles: the resident set and the
number of mappings stay flat (after 20 warm-up cycles)."""
from __future__ import annotations

import layermap

from conftest import model
from test_interrupt import n_maps, rss_kib

# A leaked engine, dataset+tokenizer or model mapping costs 20+ KiB a cycle on
# stories260K (the model file alone is 1.1 MB): over 180 cycles that exceeds this.
RSS_BOUND_KIB = 3 * 1024


def cycle(path: str) -> None:
    with layermap.open(path) as m:
        r = layermap.attribute(m, ["Once upon a time there was a little girl.", "She liked the park."],
                               method=("grad-weight", "act-sq"), seq_len=32, progress=False)
        assert r["grad-weight"].values.shape == (5, 7)
        layermap.tokenize(m, "Once upon a time")


def test_200_cycles_do_not_leak():
    for path in (model("stories260K.gguf"), model("stories260K-hf")):
        for _ in range(20):
            cycle(path)
        rss0, maps0 = rss_kib(), n_maps()
        for _ in range(180):
            cycle(path)
        grew = rss_kib() - rss0
        assert grew < RSS_BOUND_KIB, f"{path}: RSS grew {grew} KiB over 180 cycles"
        assert n_maps() <= maps0 + 2, f"{path}: {n_maps() - maps0} more mappings"


def test_open_close_and_gc():
    path = model("stories260K.gguf")
    maps0 = n_maps()
    for _ in range(200):
        m = layermap.open(path)
        assert m.n_layers == 5
        m.close()
        m.close()  # idempotent
        layermap.open(path)  # closed by the garbage collector
    assert n_maps() <= maps0 + 2
