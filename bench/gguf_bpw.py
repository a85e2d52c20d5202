#!/usr/bin/env python3
"""Bits per weight of a GGUF's quantizable weights (2-D tensors named *weight,
not *_norm.weight: what llama-quantize quantizes and `layermap recipe` assigns),
from `layermap inspect --tensors --json` on stdin. Prints: bpw weights bytes
and the dtypes' shares of the weights.

With --check TYPES.txt (a `layermap recipe` file): exit 1 unless every tensor
of the recipe has the recipe's type in the GGUF (llama-quantize applied it)."""
import collections, json, sys

d = json.load(sys.stdin)
w = b = 0
hist = collections.Counter()
for t in d["tensors"]:
    if len(t["shape"]) < 2 or not t["name"].endswith("weight") or "_norm.weight" in t["name"]:
        continue
    n = 1
    for s in t["shape"]:
        n *= s
    w += n
    b += t["bytes"]
    hist[t["dtype"]] += n
print(f"{8 * b / w:.6f} {w} {b} " + " ".join(f"{k}:{100 * v / w:.1f}%" for k, v in sorted(hist.items())))
if len(sys.argv) == 3 and sys.argv[1] == "--check":
    got = {t["name"]: t["dtype"].lower() for t in d["tensors"]}
    bad = []
    for tok in open(sys.argv[2]).read().split():
        pat, typ = tok.split("=", 1)
        name = pat.lstrip("^").rstrip("$").replace("\\.", ".")
        if got.get(name) != typ:
            bad.append(f"{name}: {got.get(name)} != {typ}")
    if bad:
        sys.exit(f"gguf_bpw: {len(bad)} tensors not as the recipe says: " + "; ".join(bad[:5]))
