#!/usr/bin/env python3
"""Per-tensor dequantization reference for the real GGUF models.

Run with the venv of scripts/ref_venv.sh (it has the `gguf` package, 0.19.0 used here, and numpy):

    scripts/fetch_models.sh
    $(scripts/ref_venv.sh) tests/ref/gen_real_dequant_ref.py [--only NAME]

For every tensor of $LAYERMAP_CACHE/SmolLM2-135M-Instruct.Q4_1.gguf and
$LAYERMAP_CACHE/gemma-3-270m-q4_k_m.gguf (LAYERMAP_CACHE defaults to
~/.cache/layermap) it dequantizes the whole tensor with gguf.quants.dequantize
(gguf-py's reference numpy dequantizers) and writes
tests/data/real_dequant/<gguf stem>.json:

  file: name, size, sha256; n_tensors; gguf version
  tensors[]: name, type (ggml type name), type_id, shape (GGUF order: ne[0] is the
    contiguous row length), n_elements, n_bytes, offset (absolute file offset of the
    tensor data), raw_sha256 (of the n_bytes stored bytes),
    sum, sumsq, sumabs, min, max (float64 accumulations of the float32 dequantized
    values, summed row by row with numpy's pairwise sum; compare with a tolerance,
    not bit for bit: |sum - ref| <= 1e-9 * sumabs, and sumsq/sumabs relative 1e-9),
    rows: {row index: first 64 values} for rows 0, 1 (when it exists) and n_rows//2;
    a "row" is ne[0] contiguous values and n_rows = n_elements / ne[0].
    Values are float32 written as their shortest round-trip decimal: parse them with
    strtof (not strtod) to get the exact float32 back.

This lets the C tests check every tensor in full without committing the weights.
"""
import argparse
import hashlib
import json
import os
import sys

import numpy as np
import gguf

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT_DIR = os.path.join(ROOT, "tests", "data", "real_dequant")
CACHE = os.environ.get("LAYERMAP_CACHE", os.path.expanduser("~/.cache/layermap"))
MODELS = ["SmolLM2-135M-Instruct.Q4_1", "gemma-3-270m-q4_k_m"]
N_VALUES = 64


def f32(v):
    # shortest decimal that round-trips the float32, emitted by json as that decimal
    return float(str(np.float32(v)))


def _gguf_version():
    try:
        from importlib.metadata import version
        return version("gguf")
    except Exception:
        return "?"


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def tensor_ref(t):
    ne = [int(x) for x in t.shape]          # GGUF order, ne[0] fastest
    n_el = int(t.n_elements)
    qt = t.tensor_type
    raw = np.ascontiguousarray(t.data)
    if qt in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16,
              gguf.GGMLQuantizationType.BF16):
        deq = gguf.quants.dequantize(raw, qt) if qt == gguf.GGMLQuantizationType.BF16 \
            else raw.astype(np.float32)
    else:
        deq = gguf.quants.dequantize(raw, qt)
    deq = np.asarray(deq, dtype=np.float32).reshape(-1)
    assert deq.size == n_el, (t.name, deq.size, n_el)
    rows2d = deq.reshape(-1, ne[0])
    n_rows = rows2d.shape[0]
    d64 = rows2d.astype(np.float64)
    ref = {
        "name": t.name,
        "type": qt.name,
        "type_id": int(qt),
        "shape": ne,
        "n_elements": n_el,
        "n_bytes": int(t.n_bytes),
        "offset": int(t.data_offset),
        "raw_sha256": hashlib.sha256(raw.tobytes()).hexdigest(),
        "sum": float(d64.sum(axis=1).sum()),
        "sumsq": float((d64 * d64).sum(axis=1).sum()),
        "sumabs": float(np.abs(d64).sum(axis=1).sum()),
        "min": f32(deq.min()),
        "max": f32(deq.max()),
        "rows": {},
    }
    for r in sorted({0, 1, n_rows // 2} & set(range(n_rows))):
        ref["rows"][str(r)] = [f32(v) for v in rows2d[r, :N_VALUES]]
    return ref


def run(name, out_dir):
    path = os.path.join(CACHE, name + ".gguf")
    if not os.path.exists(path):
        print(f"skip {name}: {path} not found (run scripts/fetch_models.sh)", file=sys.stderr)
        return
    rd = gguf.GGUFReader(path)
    res = {
        "file": os.path.basename(path),
        "file_size": os.path.getsize(path),
        "file_sha256": sha256_file(path),
        "gguf_version": int(rd.fields["GGUF.version"].contents()),
        "generator": f"gguf-py {_gguf_version()} gguf.quants.dequantize, numpy {np.__version__}",
        "n_tensors": len(rd.tensors),
        "tensors": [],
    }
    for t in rd.tensors:
        res["tensors"].append(tensor_ref(t))
    os.makedirs(out_dir, exist_ok=True)
    fn = os.path.join(out_dir, name + ".json")
    with open(fn, "w") as f:
        json.dump(res, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {fn}: {len(res['tensors'])} tensors, {os.path.getsize(fn)} bytes", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description="per-tensor dequant reference for the real GGUFs")
    ap.add_argument("--only")
    ap.add_argument("--out", default=OUT_DIR)
    a = ap.parse_args()
    for m in MODELS:
        if a.only and a.only not in m:
            continue
        run(m, a.out)


if __name__ == "__main__":
    main()
