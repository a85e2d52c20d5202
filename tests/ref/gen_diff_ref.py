#!/usr/bin/env python3
"""gen_diff_ref.py -- reference values for `layermap diff` (tests/test_diff.c).

Computes, independently of layermap's C code, the four diff metrics of
docs/METHODS.md for every (layer, module) of the bundled stories260K pairs and
writes one CSV per pair to tests/data/diff/:

    hf      stories260K-hf        vs stories260K-ft-hf        (safetensors F32)
    bf16    stories260K-hf-bf16   vs stories260K-ft-hf-bf16   (safetensors BF16)
    gguf    stories260K.gguf      vs stories260K-ft.gguf      (GGUF F32)
    cross   stories260K-hf        vs stories260K-ft.gguf      (HF base, GGUF ft)

Columns: layer, module, rows, cols, rel, density_tol0, density_tol1e-3, cosine,
rank_exact (entropy effective rank over all singular values of the exact SVD),
rank_top8 (the same over the top 8 only).

Everything is float64 from the stored values: D = W_ft - W_base exactly,
density counts |D| > tol, the SVD is numpy's LAPACK. Safetensors files are read
with a few lines of numpy (bf16 = the high half of an f32), GGUF with the gguf
package; GGUF q/k rows are un-permuted from the Meta interleaved order back to
the HF rotate-half order here (the inverse of llama.cpp's convert permute).

usage: $(scripts/ref_venv.sh) tests/ref/gen_diff_ref.py [MODELS_DIR] [OUT_DIR]
"""
import json
import os
import struct
import sys

import numpy as np

MODULES = ["attn.q", "attn.k", "attn.v", "attn.o", "mlp.up", "mlp.down", "mlp.gate"]
HF_NAMES = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
            "mlp.up_proj", "mlp.down_proj", "mlp.gate_proj"]
GGUF_NAMES = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_up", "ffn_down", "ffn_gate"]


def read_safetensors(path):
    """name -> float64 array, for F32/F16/BF16 tensors of one file."""
    with open(path, "rb") as f:
        buf = f.read()
    (hlen,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + hlen])
    base = 8 + hlen
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        raw = buf[base + a:base + b]
        dt = info["dtype"]
        if dt == "F32":
            v = np.frombuffer(raw, dtype="<f4").astype(np.float64)
        elif dt == "F16":
            v = np.frombuffer(raw, dtype="<f2").astype(np.float64)
        elif dt == "BF16":
            u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            v = u.view(np.float32).astype(np.float64)
        else:
            raise SystemExit(f"{path}: {name}: dtype {dt} not handled by the reference")
        out[name] = v.reshape(info["shape"])
    return out


def hf_modules(model_dir):
    """[layer][module] -> float64 matrix of an HF directory."""
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    t = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    return [[t[f"model.layers.{i}.{HF_NAMES[j]}.weight"] for j in range(7)]
            for i in range(cfg["num_hidden_layers"])]


def unpermute(w, n_head):
    """Meta/GGUF interleaved RoPE rows -> HF rotate-half rows."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, w.shape[1]).swapaxes(1, 2).reshape(w.shape)


def gguf_modules(path):
    import gguf  # only needed here

    r = gguf.GGUFReader(path)
    f = r.fields

    def scalar(key):
        fld = f[key]
        return int(fld.parts[fld.data[0]][0])

    n_layer = scalar("llama.block_count")
    n_head = scalar("llama.attention.head_count")
    n_kv = scalar("llama.attention.head_count_kv")
    t = {}
    for ten in r.tensors:
        if ten.tensor_type.name != "F32":
            raise SystemExit(f"{path}: {ten.name}: {ten.tensor_type.name} not handled by the reference")
        t[ten.name] = np.array(ten.data, dtype=np.float64)
    out = []
    for i in range(n_layer):
        row = []
        for j in range(7):
            w = t[f"blk.{i}.{GGUF_NAMES[j]}.weight"]
            if j == 0:
                w = unpermute(w, n_head)
            elif j == 1:
                w = unpermute(w, n_kv)
            row.append(w)
        out.append(row)
    return out


def entropy_rank(s):
    tot = s.sum()
    if tot <= 0:
        return 0.0
    p = s[s > 0] / tot
    return float(np.exp(-(p * np.log(p)).sum()))


def metrics(a, b):
    d = b - a
    nd, na, nb = np.linalg.norm(d), np.linalg.norm(a), np.linalg.norm(b)
    s = np.linalg.svd(d, compute_uv=False)  # descending
    return dict(
        rel=nd / na,
        d0=np.count_nonzero(np.abs(d) > 0.0) / d.size,
        d3=np.count_nonzero(np.abs(d) > 1e-3) / d.size,
        cos=float((a * b).sum()) / (na * nb),
        rank=entropy_rank(s),
        rank8=entropy_rank(s[:8]),
    )


def write_pair(out_dir, name, base, ft):
    path = os.path.join(out_dir, f"{name}.csv")
    with open(path, "w") as f:
        f.write("layer,module,rows,cols,rel,density_tol0,density_tol1e-3,cosine,rank_exact,rank_top8\n")
        for i, (la, lb) in enumerate(zip(base, ft)):
            for j in range(7):
                a, b = la[j], lb[j]
                assert a.shape == b.shape, (name, i, j)
                m = metrics(a, b)
                f.write(f"{i},{MODULES[j]},{a.shape[0]},{a.shape[1]},{m['rel']:.17g},{m['d0']:.17g},"
                        f"{m['d3']:.17g},{m['cos']:.17g},{m['rank']:.17g},{m['rank8']:.17g}\n")
    print("wrote", path)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    models = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "..", "..", "shared", "models")
    out_dir = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "..", "data", "diff")
    os.makedirs(out_dir, exist_ok=True)
    p = lambda rel: os.path.join(models, rel)
    hf_b, hf_f = hf_modules(p("stories260K-hf")), hf_modules(p("stories260K-ft-hf"))
    bf_b, bf_f = hf_modules(p("stories260K-hf-bf16")), hf_modules(p("stories260K-ft-hf-bf16"))
    gg_b, gg_f = gguf_modules(p("stories260K.gguf")), gguf_modules(p("stories260K-ft.gguf"))
    # sanity: the GGUF files hold the HF weights once un-permuted
    same = all(np.array_equal(x, y) for lx, ly in zip(gg_f, hf_f) for x, y in zip(lx, ly))
    print("GGUF ft (un-permuted) == HF ft:", same)
    write_pair(out_dir, "hf", hf_b, hf_f)
    write_pair(out_dir, "bf16", bf_b, bf_f)
    write_pair(out_dir, "gguf", gg_b, gg_f)
    write_pair(out_dir, "cross", hf_b, gg_f)


if __name__ == "__main__":
    main()
