#!/usr/bin/env python3
"""Reference values for `layermap compare` (tests/output/test_compare.c).

Writes small matrices with ties and NaN cells to tests/data/compare/ and, for
every pair, Spearman (scipy.stats.spearmanr), Kendall tau-b
(scipy.stats.kendalltau, variant "b") and the top-k overlap over the cells
finite in both, to tests/data/compare/ref.csv. Needs numpy and scipy:

    python3 -m venv /tmp/v && /tmp/v/bin/pip install numpy scipy
    /tmp/v/bin/python tests/ref/gen_compare_ref.py

Output is reproducible (fixed seed, values printed with repr).
"""
import json
import math
import os

import numpy as np
from scipy import stats

MODULES = ["attn.q", "attn.k", "attn.v", "attn.o", "mlp.up", "mlp.down", "mlp.gate"]
OUT = os.path.join(os.path.dirname(__file__), "..", "data", "compare")
K_LIST = [1, 5, 10, 28]


def write_csv(path, m):
    with open(path, "w") as f:
        f.write("layer," + ",".join(MODULES) + "\n")
        for l, row in enumerate(m):
            f.write(str(l) + "," + ",".join("" if math.isnan(v) else repr(float(v)) for v in row) + "\n")


def write_json(path, m, name):
    vals = [[None if math.isnan(v) else float(v) for v in row] for row in m]
    doc = {"model": name, "method": "ref", "norm": "none", "note": "gen_compare_ref.py",
           "modules": MODULES, "layers": len(m), "values": vals}
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


def topk(a, b, k):
    """k largest of each (ties: lower cell index first), |overlap| / k."""
    idx = np.arange(len(a))
    ta = set(sorted(idx, key=lambda i: (-a[i], i))[:k])
    tb = set(sorted(idx, key=lambda i: (-b[i], i))[:k])
    return len(ta & tb) / k


def main():
    rng = np.random.default_rng(13)
    L = 4
    # a: integers 0..5 (many ties), two NaN cells
    a = rng.integers(0, 6, size=(L, 7)).astype(float)
    a[0, 3] = np.nan
    a[2, 6] = np.nan
    # b: a plus noise, rounded to one decimal (some ties), NaN elsewhere and one shared
    b = np.round(a + rng.normal(0, 1.5, size=(L, 7)), 1)
    b[np.isnan(b)] = 1.0
    b[1, 1] = np.nan
    b[2, 6] = np.nan
    # c: continuous, no ties, no NaN (JSON input)
    c = rng.normal(0, 1, size=(L, 7))
    # d: reversed order of c with a block of ties
    d = -c.copy()
    d[3, :] = 0.25
    mats = {"a.csv": a, "b.csv": b, "c.json": c, "d.csv": d}
    os.makedirs(OUT, exist_ok=True)
    for name, m in mats.items():
        p = os.path.join(OUT, name)
        if name.endswith(".csv"):
            write_csv(p, m)
        else:
            write_json(p, m, "c")
    names = list(mats)
    with open(os.path.join(OUT, "ref.csv"), "w") as f:
        f.write("a,b,k,n,spearman,kendall,topk\n")
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                x, y = mats[names[i]].ravel(), mats[names[j]].ravel()
                ok = ~(np.isnan(x) | np.isnan(y))
                x, y = x[ok], y[ok]
                rho = stats.spearmanr(x, y).statistic
                tau = stats.kendalltau(x, y, variant="b").statistic
                for k in K_LIST:
                    kk = min(k, len(x))
                    f.write(f"{names[i]},{names[j]},{k},{len(x)},{float(rho)!r},{float(tau)!r},{topk(x, y, kk)!r}\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
