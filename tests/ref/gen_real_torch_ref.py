#!/usr/bin/env python3
"""gen_real_torch_ref.py -- float64 PyTorch reference on a real model (SmolLM2-135M Q4_1).

    $(scripts/ref_venv.sh) tests/ref/gen_real_torch_ref.py      # ~2 min, CPU, one thread

Runs the reference model and method code of gen_torch_ref.py (imported, not
copied: `RefModel`, `clean_pass`, `seq_loss`, `loss_with`, `spearman`,
`save_file`) on the weights of

    ${LAYERMAP_CACHE:-~/.cache/layermap}/SmolLM2-135M-Instruct.Q4_1.gguf

(scripts/fetch_models.sh fetches it), dequantized with gguf.quants.dequantize
(the values layermap's C dequantizer produces, F32) and widened to float64.
GGUF 'llama' q/k rows are in Meta's interleaved RoPE order; they are
un-permuted to HF rotate-half order (GGUF row h*hd + 2i + a holds HF row
h*hd + a*hd/2 + i), as layermap's loader does.

Dataset {s0, s1}: two snippets of data/calib.txt tokenized by the built CLI
(`build/layermap tokenize MODEL -f FILE --ids`; SmolLM2 adds no BOS). s0 is
masked in everywhere, s1 only where the target is in its second half.

Writes tests/data/ref/smollm2-q4_1.safetensors (F32, 216 KB: no full logits,
no full gradients; names in tests/ref/README.md). Deterministic (one thread,
fixed data, sorted header). Needs torch, numpy, gguf; not needed by `make test`.
"""
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_torch_ref as R                                   # noqa: E402  (sets one thread)

DT = R.DT
MODULES = R.MODULES
REPO = R.REPO
NAME = "smollm2-q4_1"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
OUT_FILE = R.OUT / f"{NAME}.safetensors"

# Exact substrings of data/calib.txt (checked).
S0_TEXT = ("The keeper was a quiet man named Tobias, and he lived in the cottage at its foot with "
           "his daughter, Elin, who was eleven years old and wanted to know everything.")
S1_TEXT = ("Every evening at sunset Tobias climbed the one hundred and twelve steps to the lamp room. "
           "Elin usually followed him, counting out loud,")

# Methods written (the expensive ig / ablate-mean of gen_torch_ref are left out).
METHODS = ["grad-weight", "grad-weight-signed", "fisher", "grad-norm", "act-grad",
           "act-sq", "wanda", "ablate"]
GGUF_W = {"q": "attn_q", "k": "attn_k", "v": "attn_v", "o": "attn_output",
          "up": "ffn_up", "down": "ffn_down", "gate": "ffn_gate"}


def cache_dir():
    env = os.environ.get("LAYERMAP_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "layermap"


# ---------------------------------------------------------------------------
# The model: RefModel with weights from a GGUF file
# ---------------------------------------------------------------------------

def unpermute_qk(w, n_head):
    """GGUF/Meta interleaved rows -> HF rotate-half rows, per head:
    HF row h*hd + a*hd/2 + i = GGUF row h*hd + 2*i + a."""
    rows, cols = w.shape
    hd = rows // n_head
    assert rows == n_head * hd and hd % 2 == 0
    return w.reshape(n_head, hd // 2, 2, cols).transpose(1, 2).reshape(rows, cols).contiguous()


class GGUFRefModel(R.RefModel):
    """gen_torch_ref.RefModel (its forward, rmsnorm, rope, ...) with the
    attributes RefModel.__init__ sets for a tied Llama, read from a GGUF."""

    def __init__(self, path):
        import gguf
        self.path = Path(path)
        rd = gguf.GGUFReader(str(path))

        def kv(key):
            return rd.fields[key].contents()

        arch = kv("general.architecture")
        assert arch == "llama", arch
        self.arch = "llama"
        self.n_layer = int(kv("llama.block_count"))
        self.dim = int(kv("llama.embedding_length"))
        self.n_head = int(kv("llama.attention.head_count"))
        self.n_kv = int(kv("llama.attention.head_count_kv"))
        self.head_dim = int(kv("llama.rope.dimension_count")) if "llama.rope.dimension_count" in rd.fields \
            else self.dim // self.n_head
        self.ffn = int(kv("llama.feed_forward_length"))
        self.eps = float(kv("llama.attention.layer_norm_rms_epsilon"))
        theta = float(kv("llama.rope.freq_base"))
        self.bos = int(kv("tokenizer.ggml.bos_token_id"))
        self.eos = int(kv("tokenizer.ggml.eos_token_id"))
        self.add_bos = bool(kv("tokenizer.ggml.add_bos_token")) if "tokenizer.ggml.add_bos_token" in rd.fields else True
        assert "llama.rope.scaling.type" not in rd.fields, "rope scaling not handled here"
        self.cfg = {"source": str(path)}
        self.norm_add_one = False
        self.embed_scale = 1.0
        self.qk_norm = False
        self.post_norms = False
        self.act = "silu"
        self.attn_scale = self.head_dim ** -0.5
        self.layer_types = ["full_attention"] * self.n_layer
        self.window = [0] * self.n_layer
        self.theta = [theta] * self.n_layer
        self.rope_scaling = None
        self.rope_scaling_layers = [None] * self.n_layer

        st = {}
        for t in rd.tensors:
            a = gguf.quants.dequantize(t.data, t.tensor_type)           # float32, numpy shape = ne reversed
            shape = [int(x) for x in reversed(t.shape.tolist())]
            st[t.name] = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64).reshape(shape))
            st[t.name + ":type"] = t.tensor_type.name
        self.tensor_types = {k[:-5]: v for k, v in st.items() if k.endswith(":type")}
        st = {k: v for k, v in st.items() if not k.endswith(":type")}
        self.embed = st.pop("token_embd.weight")
        self.vocab = self.embed.shape[0]
        if "llama.vocab_size" in rd.fields:
            assert int(kv("llama.vocab_size")) == self.vocab
        self.out_norm = st.pop("output_norm.weight")
        self.tied = "output.weight" not in st
        self.lm_head = self.embed if self.tied else st.pop("output.weight")
        self.W, self.b, self.norms = [], [], []
        for l in range(self.n_layer):
            p = f"blk.{l}."
            W = {m: st.pop(p + GGUF_W[m] + ".weight") for m in MODULES}
            W["q"] = unpermute_qk(W["q"], self.n_head)
            W["k"] = unpermute_qk(W["k"], self.n_kv)
            self.W.append(W)
            self.b.append({m: None for m in MODULES})
            self.norms.append({"attn_norm": st.pop(p + "attn_norm.weight"),
                               "ffn_norm": st.pop(p + "ffn_norm.weight")})
        st.pop("rope_freqs.weight", None)
        assert not st, f"unused GGUF tensors: {sorted(st)[:8]}"
        H, KV, hd, D, Fd = self.n_head, self.n_kv, self.head_dim, self.dim, self.ffn
        for l in range(self.n_layer):
            shp = {m: tuple(self.W[l][m].shape) for m in MODULES}
            assert shp == {"q": (H * hd, D), "k": (KV * hd, D), "v": (KV * hd, D), "o": (D, H * hd),
                           "up": (Fd, D), "down": (D, Fd), "gate": (Fd, D)}, shp
        self.tensors = None


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------

def layermap_bin():
    exe = REPO / "build" / "layermap"
    if not exe.exists():
        print("  build/layermap missing: running make")
        subprocess.run(["make", "-C", str(REPO)], check=True, stdout=subprocess.DEVNULL)
    return exe


def tokenize(model_path, text):
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        f.write(text)
        fn = f.name
    try:
        out = subprocess.run([str(layermap_bin()), "tokenize", str(model_path), "-f", fn, "--ids"],
                             check=True, capture_output=True, text=True).stdout
    finally:
        os.unlink(fn)
    return [int(x) for x in out.split()]


def make_data(model, model_path):
    calib = (REPO / "data" / "calib.txt").read_text(encoding="utf-8")
    for t in (S0_TEXT, S1_TEXT):
        assert t in calib, f"snippet not in data/calib.txt: {t[:40]!r}"
    ids0, ids1 = tokenize(model_path, S0_TEXT), tokenize(model_path, S1_TEXT)
    assert not model.add_bos and ids0[0] != model.bos and ids1[0] != model.bos
    s0 = R.make_seq(ids0, [1] * (len(ids0) - 1) + [0])
    n = len(ids1)
    c = n // 2                                             # as stories260K's s1: target in tokens c..n-1
    s1 = R.make_seq(ids1, [1 if (i + 1 >= c and i < n - 1) else 0 for i in range(n)])
    return [s0, s1]


# ---------------------------------------------------------------------------
# Methods: gen_torch_ref.compute_methods' formulas, without ig / ablate-mean,
# keeping only the summaries of s0's gradients
# ---------------------------------------------------------------------------

def ablate_layer(model, s, l):
    """L_s(y_(l,m) := 0) for the 7 modules of layer l in one batch of 7:
    row j scales module j's output by 0, the others by 1 (y * 1 = y, y * 0 = 0
    exactly; the same intervention as replacing y by zeros)."""
    M = len(MODULES)
    iv = {}
    for j, m in enumerate(MODULES):
        a = torch.ones(M, dtype=DT)
        a[j] = 0.0
        iv[(l, m)] = ("scale", a)
    return R.loss_with(model, s, iv, batch=M)


def compute(model, data):
    L, M = model.n_layer, len(MODULES)
    res = {k: np.zeros((L, M)) for k in METHODS}
    xsq = {}
    bi_sum, bi_n = np.zeros(L), 0
    keep = []
    s0 = {}
    for si, s in enumerate(data):
        cp = R.clean_pass(model, s)
        n = s["tokens"].shape[0]
        for l in range(L):
            c = F.cosine_similarity(cp["h_in"][l], cp["h_out"][l], dim=-1)
            bi_sum[l] += (1 - c).sum().item()
            for j, m in enumerate(MODULES):
                W, G = model.W[l][m], cp["G"][l][m]
                res["grad-weight"][l, j] += (W * G).abs().sum().item()
                res["grad-weight-signed"][l, j] += (W * G).sum().item()
                res["fisher"][l, j] += G.pow(2).sum().item()
                res["grad-norm"][l, j] += torch.linalg.norm(G).item()
                y, g, x = cp["y"][(l, m)], cp["g"][(l, m)], cp["x"][(l, m)]
                res["act-grad"][l, j] += -(g * y).sum().item()
                res["act-sq"][l, j] += x.pow(2).sum().item()
                xsq[(l, m)] = xsq.get((l, m), 0) + x.pow(2).sum(0)
        bi_n += n
        if si == 0:
            s0["gradnorm"] = np.array([[torch.linalg.norm(cp["G"][l][m]).item() for m in MODULES] for l in range(L)])
            s0["gradsum"] = np.array([[cp["G"][l][m].sum().item() for m in MODULES] for l in range(L)])
            s0["grad.0.q.row0"] = cp["G"][0]["q"][0].numpy().copy()
            s0["grad.29.down.row0"] = cp["G"][L - 1]["down"][0].numpy().copy()
            s0["logits_last"] = cp["logits"][-1].numpy().copy()
        keep.append({"loss": cp["loss"], "y": cp["y"]})     # drop G, logits, x: ~1 GB each
        del cp
    for l in range(L):
        for j, m in enumerate(MODULES):
            res["wanda"][l, j] = (model.W[l][m].abs() * torch.sqrt(xsq[(l, m)])[None, :]).sum().item()
    for s, cp in zip(data, keep):
        for l in range(L):
            res["ablate"][l] += ablate_layer(model, s, l).numpy() - cp["loss"]
    res["block-influence"] = bi_sum / bi_n
    return res, keep, s0


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------

def main():
    t_start = time.time()
    path = cache_dir() / GGUF_NAME
    if not path.exists():
        raise SystemExit(f"{path}: not found (scripts/fetch_models.sh fetches it; set LAYERMAP_CACHE)")
    print(f"== {NAME}  ({path})")
    model = GGUFRefModel(path)
    types = sorted(set(model.tensor_types.values()))
    print(f"  llama: {model.n_layer} layers, dim {model.dim}, heads {model.n_head}/{model.n_kv}, head_dim "
          f"{model.head_dim}, ffn {model.ffn}, vocab {model.vocab}, tied {model.tied}, theta {model.theta[0]:g}, "
          f"eps {model.eps!r}, tensor types {types}  (load {time.time() - t_start:.1f} s)")
    assert (model.n_layer, model.dim, model.n_head, model.n_kv, model.head_dim, model.ffn, model.vocab) == \
        (30, 576, 9, 3, 64, 1536, 49152) and model.tied
    data = make_data(model, path)
    for i, s in enumerate(data):
        print(f"  s{i}: {s['tokens'].shape[0]} tokens, {int(s['mask'].sum())} targets: {s['tokens'].tolist()}")

    t0 = time.time()
    res, passes, s0 = compute(model, data)
    t_methods = time.time() - t0
    L = model.n_layer

    # ---- sanity checks
    ok = True

    def check(cond, msg):
        nonlocal ok
        print(f"  [{'ok' if cond else 'FAIL'}] {msg}")
        ok = ok and bool(cond)

    Q, K, V, O, UP, DOWN, GATE = range(7)
    for meth in ["act-grad", "ablate"]:
        m = res[meth]
        sc = np.abs(m).max()
        for a, b, i, j in [("q", "k", Q, K), ("v", "o", V, O), ("up", "down", UP, DOWN)]:
            e = R.close(m[:, i], m[:, j], scale=sc)
            check(e < 1e-9, f"{meth}: {a} == {b} columns (max rel diff {e:.1e})")
    m = res["ablate"]
    e = max(R.close(m[:, GATE], m[:, UP], scale=np.abs(m).max()), R.close(m[:, GATE], m[:, DOWN], scale=np.abs(m).max()))
    check(e < 1e-9, f"ablate: gate == up == down (max rel diff {e:.1e})")
    # the batched ablation equals gen_torch_ref's replace-by-zeros, on a few cells
    worst = 0.0
    for si, l, m in [(0, 0, "q"), (1, 13, "o"), (0, 29, "gate")]:
        s, cp = data[si], passes[si]
        d1 = R.loss_with(model, s, {(l, m): ("replace", torch.zeros_like(cp["y"][(l, m)]))}).item() - cp["loss"]
        d2 = ablate_layer(model, s, l)[MODULES.index(m)].item() - cp["loss"]
        worst = max(worst, abs(d1 - d2) / max(abs(d1), 1e-12))
    check(worst < 1e-9, f"batched ablation == replace-by-zeros (3 cells, max rel diff {worst:.1e})")
    # act-grad == -dL/dalpha at alpha = 1 by central difference, on a few cells
    eps, worst = 1e-5, 0.0
    for l, m in [(0, "v"), (15, "up"), (29, "q")]:
        fd = 0.0
        for s in data:
            lp = R.loss_with(model, s, {(l, m): ("scale", 1 + eps)}).item()
            lm = R.loss_with(model, s, {(l, m): ("scale", 1 - eps)}).item()
            fd += -(lp - lm) / (2 * eps)
        ag = res["act-grad"][l, MODULES.index(m)]
        worst = max(worst, abs(ag - fd) / np.abs(res["act-grad"]).max())
    check(worst < 1e-6, f"act-grad == -dL/dalpha (central difference, 3 cells): max rel diff {worst:.1e}")

    loss_sum = sum(cp["loss"] for cp in passes)
    n_tgt = int(sum(s["mask"].sum().item() for s in data))
    for i, (s, cp) in enumerate(zip(data, passes)):
        nt = int(s["mask"].sum())
        print(f"  s{i}: loss {cp['loss']:.6f} over {nt} targets = {cp['loss'] / nt:.4f} nats/token")
    print(f"  dataset: loss_sum {loss_sum:.6f} over {n_tgt} targets = {loss_sum / n_tgt:.4f} nats/token, "
          f"ppl {math.exp(loss_sum / n_tgt):.3f}")
    check(loss_sum / n_tgt < 5.0, "loss per token is that of a working model (< 5 nats; uniform = "
          f"{math.log(model.vocab):.2f})")
    print(f"  Spearman rank corr act-grad vs ablate: {R.spearman(res['act-grad'], res['ablate']):+.4f}")
    print(f"  Spearman rank corr grad-weight vs ablate: {R.spearman(res['grad-weight'], res['ablate']):+.4f}")
    i, j = np.unravel_index(np.argmax(res["ablate"]), res["ablate"].shape)
    print(f"  largest ablate: layer {i} {MODULES[j]} {res['ablate'][i, j]:.4f} nats; "
          f"ablate range [{res['ablate'].min():.4f}, {res['ablate'].max():.4f}]")

    # ---- write
    f32 = R.f32
    t = {}
    for i, (s, cp) in enumerate(zip(data, passes)):
        t[f"s{i}.tokens"] = f32(s["tokens"].numpy())
        t[f"s{i}.mask"] = f32(s["mask"].numpy())
        t[f"s{i}.loss"] = f32([cp["loss"]])
    for k, v in s0.items():
        t[f"s0.{k}"] = f32(v)
    for k in METHODS + ["block-influence"]:
        t[f"method.{k}"] = f32(res[k])
    t["stat.loss_sum"] = f32([loss_sum])
    t["stat.n_targets"] = f32([n_tgt])
    meta = {"model": GGUF_NAME, "modules": ",".join(R.MODULE_NAMES), "generator": "tests/ref/gen_real_torch_ref.py",
            "precision": "weights dequantized by gguf.quants (F32), computed in float64, stored F32",
            "loss_sum_f64": repr(loss_sum)}
    R.OUT.mkdir(parents=True, exist_ok=True)
    R.save_file(t, str(OUT_FILE), metadata=meta)
    print(f"  wrote {OUT_FILE.relative_to(REPO)} ({OUT_FILE.stat().st_size} bytes, {len(t)} tensors)")
    print(f"  time: {time.time() - t_start:.1f} s total ({t_methods:.1f} s passes + methods)")
    if not ok:
        raise SystemExit("FAIL: sanity checks failed")
    print("all checks passed")


if __name__ == "__main__":
    main()
