#!/usr/bin/env python3
"""gen_torch_ref.py -- PyTorch float64 reference for layermap's C tests.

    $(scripts/ref_venv.sh) tests/ref/gen_torch_ref.py          # regenerate everything
    python tests/ref/gen_torch_ref.py --models tiny-qwen3        # only some models
    python tests/ref/gen_torch_ref.py --no-hf                    # skip the transformers check

What it does, deterministically (fixed seeds, single thread):

1. Writes four tiny random HF models (config.json + model.safetensors, F32):
   tests/data/tiny-qwen2, tiny-qwen3, tiny-llama-untied, tiny-gemma3.
2. Loads each of those and ../shared/models/stories260K-hf (or $LM_MODELS/
   stories260K-hf) into `RefModel`, a pure-torch float64 implementation of the
   model defined in docs/METHODS.md (Llama, Mistral, Qwen2, Qwen3, Gemma 3).
   `RefModel.forward` exposes every module output y (attn.q/k/v/o, mlp.up/down/
   gate, as METHODS.md defines them: before q/k norms, RoPE and post norms,
   including biases) and accepts per-(layer, module) interventions: scale y by
   alpha, or replace y by a given tensor.
3. Cross-checks logits and weight gradients against HF transformers
   (Llama/Qwen2/Qwen3/Gemma3ForCausalLM, float64, attn_implementation="eager")
   and fails if max |logit diff| > 1e-9. HF keeps RMSNorm, RoPE angles and the
   attention softmax in float32 even in a float64 model; the check patches those
   three (and Gemma's float32-rounded embed_scale buffer) to float64 and also
   prints the unpatched difference for information. transformers is optional:
   without it the check is skipped with a warning.
4. Computes, for the dataset {s0, s1}, logits, losses, weight gradients of s0,
   a greedy decode, and every method matrix of docs/METHODS.md, and writes
   tests/data/ref/<model>.safetensors (all F32). Tensor names: tests/ref/README.md.
5. Sanity checks (asserts): module-output-method column identities, Qwen3/Gemma
   act-grad ~0 columns, act-grad vs a finite difference of the loss in alpha,
   the stories greedy text; prints IG completeness gaps and, for stories260K,
   Spearman rank correlations between act-grad, ig and ablate.
"""
import argparse
import json
import math
import importlib.util
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

torch.set_num_threads(1)            # bitwise reproducible reductions
DT = torch.float64
MODULES = ["q", "k", "v", "o", "up", "down", "gate"]
MODULE_NAMES = ["attn.q", "attn.k", "attn.v", "attn.o", "mlp.up", "mlp.down", "mlp.gate"]
HF_PROJ = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
           "o": "self_attn.o_proj", "up": "mlp.up_proj", "down": "mlp.down_proj",
           "gate": "mlp.gate_proj"}
IG_STEPS = 32
REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
OUT = DATA / "ref"
TINY = ["tiny-qwen2", "tiny-qwen3", "tiny-llama-untied", "tiny-gemma3"]
S1_TEXT = "Tom had a red ball. He threw it to his dog and the dog ran."
STORIES_TEXT = " Once upon a time, there was a little girl named Lily. She loved to play outside in the park"


def save_file(tensors, path, metadata=None):
    """Write a safetensors file with a byte-reproducible header (sorted keys;
    the safetensors package orders __metadata__ through a hash map)."""
    names = sorted(tensors)
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = {k: str(metadata[k]) for k in sorted(metadata)}
    for k in names:
        t = tensors[k].detach().contiguous()
        assert t.dtype == torch.float32, k
        b = t.numpy().astype("<f4").tobytes()
        header[k] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def models_dir():
    env = os.environ.get("LM_MODELS")
    return Path(env) if env else (REPO.parent / "shared" / "models")


# ---------------------------------------------------------------------------
# The reference model (docs/METHODS.md, "Model")
# ---------------------------------------------------------------------------

class RefModel:
    """Float64 model from an HF directory (config.json + model.safetensors)."""

    def __init__(self, path):
        self.path = Path(path)
        cfg = json.loads((self.path / "config.json").read_text())
        self.cfg = cfg
        mt = cfg["model_type"]
        if mt in ("llama", "mistral"):
            self.arch = mt
        elif mt == "qwen2":
            self.arch = "qwen2"
        elif mt == "qwen3":
            self.arch = "qwen3"
        elif mt in ("gemma3_text", "gemma3"):
            self.arch = "gemma3"
        else:
            raise ValueError(f"unsupported model_type {mt}")
        if mt == "gemma3" and "text_config" in cfg:
            cfg = dict(cfg["text_config"], **{k: v for k, v in cfg.items() if k != "text_config"})
        g = self.arch == "gemma3"
        self.n_layer = cfg["num_hidden_layers"]
        self.dim = cfg["hidden_size"]
        self.n_head = cfg["num_attention_heads"]
        self.n_kv = cfg.get("num_key_value_heads", self.n_head)
        self.head_dim = cfg.get("head_dim") or self.dim // self.n_head
        self.ffn = cfg["intermediate_size"]
        self.vocab = cfg["vocab_size"]
        self.eps = cfg.get("rms_norm_eps", 1e-6)
        self.bos = cfg.get("bos_token_id")
        self.eos = cfg.get("eos_token_id")
        self.tied = cfg.get("tie_word_embeddings", g)   # HF default: gemma True, others vary
        self.norm_add_one = g
        self.embed_scale = math.sqrt(self.dim) if g else 1.0
        self.qk_norm = self.arch in ("qwen3", "gemma3")
        self.post_norms = g
        act = cfg.get("hidden_activation") or cfg.get("hidden_act") or "silu"
        if act in ("gelu_pytorch_tanh", "gelu_tanh", "gelu_python_tanh"):
            self.act = "gelu_tanh"
        elif act == "silu":
            self.act = "silu"
        else:
            raise ValueError(f"unsupported activation {act}")
        if cfg.get("final_logit_softcapping") or cfg.get("attn_logit_softcapping"):
            raise ValueError("logit softcapping is not part of docs/METHODS.md")
        self.attn_scale = (cfg["query_pre_attn_scalar"] ** -0.5 if g else self.head_dim ** -0.5)

        # per-layer attention type: window (0 = full) and rope theta
        theta = cfg.get("rope_theta")
        rp = cfg.get("rope_parameters") or {}
        if theta is None:
            theta = (rp.get("full_attention", rp)).get("rope_theta", 10000.0)
        theta_local = cfg.get("rope_local_base_freq")
        if theta_local is None:
            theta_local = rp.get("sliding_attention", {}).get("rope_theta", theta if not g else 10000.0)
        scaling = cfg.get("rope_scaling") or (rp if "rope_type" in rp else rp.get("full_attention"))
        self.rope_scaling = scaling if scaling and scaling.get("rope_type", scaling.get("type")) not in (None, "default") else None
        lt = cfg.get("layer_types")
        sw = cfg.get("sliding_window")
        if lt is None:
            if g:
                pat = cfg.get("sliding_window_pattern", 6)
                lt = ["full_attention" if (i + 1) % pat == 0 else "sliding_attention" for i in range(self.n_layer)]
            elif self.arch == "mistral" and sw:
                lt = ["sliding_attention"] * self.n_layer
            elif self.arch in ("qwen2", "qwen3") and cfg.get("use_sliding_window") and sw:
                mwl = cfg.get("max_window_layers", 0)
                lt = ["sliding_attention" if i >= mwl else "full_attention" for i in range(self.n_layer)]
            else:
                lt = ["full_attention"] * self.n_layer
        if self.arch in ("qwen2", "qwen3") and not cfg.get("use_sliding_window"):
            lt = ["full_attention"] * self.n_layer       # HF: sliding_window ignored then
        self.layer_types = lt
        self.window = [sw if t == "sliding_attention" else 0 for t in lt]
        self.theta = [theta_local if (g and t == "sliding_attention") else theta for t in lt]
        self.rope_scaling_layers = [None if (g and t == "sliding_attention") else self.rope_scaling for t in lt]

        # weights (F32/F16/BF16 on disk -> float64)
        st = load_file(str(self.path / "model.safetensors"))
        st = {k: v.to(DT) for k, v in st.items()}
        self.tensors = st
        self.embed = st["model.embed_tokens.weight"]
        self.out_norm = st["model.norm.weight"]
        self.lm_head = st.get("lm_head.weight") if not self.tied else None
        if self.lm_head is None:
            self.lm_head = self.embed
        self.W, self.b, self.norms = [], [], []
        for l in range(self.n_layer):
            p = f"model.layers.{l}."
            self.W.append({m: st[p + HF_PROJ[m] + ".weight"] for m in MODULES})
            self.b.append({m: st.get(p + HF_PROJ[m] + ".bias") for m in MODULES})
            nm = {"attn_norm": st[p + "input_layernorm.weight"]}
            if g:
                nm["post_attn_norm"] = st[p + "post_attention_layernorm.weight"]
                nm["ffn_norm"] = st[p + "pre_feedforward_layernorm.weight"]
                nm["post_ffn_norm"] = st[p + "post_feedforward_layernorm.weight"]
            else:
                nm["ffn_norm"] = st[p + "post_attention_layernorm.weight"]
            if self.qk_norm:
                nm["q_norm"] = st[p + "self_attn.q_norm.weight"]
                nm["k_norm"] = st[p + "self_attn.k_norm.weight"]
            self.norms.append(nm)

    # -- pieces --------------------------------------------------------------
    def rmsnorm(self, x, w):
        y = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return y * ((1.0 + w) if self.norm_add_one else w)

    def inv_freq(self, l):
        hd = self.head_dim
        i = torch.arange(hd // 2, dtype=DT)
        f = self.theta[l] ** (-2.0 * i / hd)          # f_i = theta^(-2i/head_dim)
        sc = self.rope_scaling_layers[l]
        if sc is not None:
            rt = sc.get("rope_type", sc.get("type"))
            if rt == "linear":
                f = f / sc["factor"]
            elif rt == "llama3":
                fac, lo, hi = sc["factor"], sc["low_freq_factor"], sc["high_freq_factor"]
                om = sc["original_max_position_embeddings"]
                wl = 2 * math.pi / f
                lo_wl, hi_wl = om / lo, om / hi
                smooth = (om / wl - lo) / (hi - lo)
                scaled = torch.where(wl > lo_wl, f / fac, f)
                mid = (1 - smooth) * f / fac + smooth * f
                is_mid = (wl <= lo_wl) & (wl >= hi_wl)
                f = torch.where(is_mid, mid, scaled)
            else:
                raise ValueError(f"unsupported rope scaling {rt}")
        return f

    def rope(self, x, l):
        # x: (B, n, H, hd), rotate-half convention
        n, hd = x.shape[1], self.head_dim
        ang = torch.arange(n, dtype=DT)[:, None] * self.inv_freq(l)[None, :]   # (n, hd/2)
        c, s = torch.cos(ang)[None, :, None, :], torch.sin(ang)[None, :, None, :]
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)

    def attn_mask(self, n, l):
        i = torch.arange(n)[:, None]
        j = torch.arange(n)[None, :]
        ok = j <= i
        w = self.window[l]
        if w:
            ok = ok & (j > i - w)                        # i - w < j <= i
        return ok

    @staticmethod
    def _apply_iv(y, key, iv):
        if iv is None or key not in iv:
            return y
        kind, val = iv[key]
        if kind == "scale":
            if torch.is_tensor(val) and val.dim() == 1:   # one alpha per batch row
                val = val[:, None, None]
            return y * val
        if kind == "replace":
            val = val.to(DT)
            return val.expand_as(y) if val.dim() < 3 or val.shape[0] == 1 else val
        raise ValueError(kind)

    # -- forward -------------------------------------------------------------
    def forward(self, tokens, batch=1, iv=None, capture=False, weights=None):
        """tokens: 1-D LongTensor (n). Returns logits (batch, n, vocab) and, if
        capture, a dict with y[(l, m)] (module outputs, after interventions,
        live in the graph), x[(l, m)] (module inputs), h_in[l], h_out[l].
        iv: {(layer, module): ("scale", alpha) | ("replace", tensor)}, alpha a
        number or a (batch,) tensor, tensor (n, out) or (batch, n, out).
        weights: optional list of {module: W} overriding self.W (for grads)."""
        W = weights if weights is not None else self.W
        n = tokens.shape[0]
        H, KV, hd = self.n_head, self.n_kv, self.head_dim
        cap = {"y": {}, "x": {}, "h_in": [], "h_out": []} if capture else None
        h = (self.embed[tokens] * self.embed_scale)[None].expand(batch, n, self.dim)

        def lin(x, l, m):
            y = x @ W[l][m].T
            if self.b[l][m] is not None:
                y = y + self.b[l][m]
            y = self._apply_iv(y, (l, m), iv)
            if capture:
                cap["x"][(l, m)] = x
                cap["y"][(l, m)] = y
            return y

        for l in range(self.n_layer):
            nm = self.norms[l]
            if capture:
                cap["h_in"].append(h)
            x = self.rmsnorm(h, nm["attn_norm"])
            q = lin(x, l, "q").reshape(batch, n, H, hd)
            k = lin(x, l, "k").reshape(batch, n, KV, hd)
            v = lin(x, l, "v").reshape(batch, n, KV, hd)
            if self.qk_norm:
                q = self.rmsnorm(q, nm["q_norm"])
                k = self.rmsnorm(k, nm["k_norm"])
            q, k = self.rope(q, l), self.rope(k, l)
            rep = H // KV                                 # query head i reads kv head i // rep
            k = k.repeat_interleave(rep, dim=2)
            v = v.repeat_interleave(rep, dim=2)
            sc = torch.einsum("bihd,bjhd->bhij", q, k) * self.attn_scale
            sc = sc.masked_fill(~self.attn_mask(n, l), float("-inf"))
            p = torch.softmax(sc, dim=-1)
            att = torch.einsum("bhij,bjhd->bihd", p, v).reshape(batch, n, H * hd)
            o = lin(att, l, "o")
            if self.post_norms:
                o = self.rmsnorm(o, nm["post_attn_norm"])
            h = h + o
            x2 = self.rmsnorm(h, nm["ffn_norm"])
            gt = lin(x2, l, "gate")
            u = lin(x2, l, "up")
            a = (F.silu(gt) if self.act == "silu" else F.gelu(gt, approximate="tanh")) * u
            d = lin(a, l, "down")
            if self.post_norms:
                d = self.rmsnorm(d, nm["post_ffn_norm"])
            h = h + d
            if capture:
                cap["h_out"].append(h)
        logits = self.rmsnorm(h, self.out_norm) @ self.lm_head.T
        return (logits, cap) if capture else logits


def seq_loss(logits, tokens, mask):
    """L_s = -sum_{i: mask[i]} log softmax(logits_i)[tok[i+1]], per batch row."""
    lp = torch.log_softmax(logits[:, :-1], dim=-1)                  # (B, n-1, V)
    tgt = tokens[1:]
    nll = -lp.gather(-1, tgt[None, :, None].expand(lp.shape[0], -1, 1))[..., 0]
    return (nll * mask[None, :-1]).sum(-1)


def greedy(model, prompt, n_new):
    toks = list(prompt)
    with torch.no_grad():
        for _ in range(n_new):
            lg = model.forward(torch.tensor(toks))
            nxt = int(lg[0, -1].argmax())
            toks.append(nxt)
            if model.eos is not None and nxt == model.eos:
                break
    return toks


# ---------------------------------------------------------------------------
# Methods (docs/METHODS.md, "Methods")
# ---------------------------------------------------------------------------

def clean_pass(model, s):
    """Forward + backward of one sequence: loss, logits, weight grads G, y,
    g = dL/dy, module inputs, residual in/out."""
    Wg = [{m: model.W[l][m].clone().requires_grad_(True) for m in MODULES} for l in range(model.n_layer)]
    logits, cap = model.forward(s["tokens"], capture=True, weights=Wg)
    for y in cap["y"].values():
        y.retain_grad()
    L = seq_loss(logits, s["tokens"], s["mask"])[0]
    L.backward()
    return {
        "loss": L.item(),
        "logits": logits[0].detach(),
        "G": [{m: Wg[l][m].grad.detach() for m in MODULES} for l in range(model.n_layer)],
        "y": {k: v[0].detach() for k, v in cap["y"].items()},
        "g": {k: v.grad[0].detach() for k, v in cap["y"].items()},
        "x": {k: v[0].detach() for k, v in cap["x"].items()},
        "h_in": [h[0].detach() for h in cap["h_in"]],
        "h_out": [h[0].detach() for h in cap["h_out"]],
    }


def loss_with(model, s, iv, batch=1):
    with torch.no_grad():
        return seq_loss(model.forward(s["tokens"], batch=batch, iv=iv), s["tokens"], s["mask"])


def ig_one(model, s, y0, key, steps):
    """-(sum_t y_t . (1/N) sum_k g_t(alpha_k)) for one sequence and module,
    all N midpoints in one batch: y is replaced by the leaf alpha_k * y."""
    alphas = (torch.arange(steps, dtype=DT) + 0.5) / steps
    Y = (alphas[:, None, None] * y0[None]).requires_grad_(True)
    logits = model.forward(s["tokens"], batch=steps, iv={key: ("replace", Y)})
    seq_loss(logits, s["tokens"], s["mask"]).sum().backward()
    return -(y0[None] * Y.grad).sum().item() / steps


def compute_methods(model, data, steps=IG_STEPS):
    L, M = model.n_layer, len(MODULES)
    z = lambda: np.zeros((L, M))
    res = {k: z() for k in ["grad-weight", "grad-weight-signed", "fisher", "grad-norm", "act-grad",
                            "ig", "ablate", "ablate-mean", "act-sq", "wanda"]}
    xsq = {}                                  # sum_s sum_t x_{m,t,j}^2 per (l, m)
    ysum, npos = {}, 0
    bi_sum, bi_n = np.zeros(L), 0
    passes = []
    for s in data:
        cp = clean_pass(model, s)
        passes.append(cp)
        n = s["tokens"].shape[0]
        npos += n
        for l in range(L):
            c = F.cosine_similarity(cp["h_in"][l], cp["h_out"][l], dim=-1)   # (n,)
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
                ysum[(l, m)] = ysum.get((l, m), 0) + y.sum(0)
        bi_n += n
    for l in range(L):
        for j, m in enumerate(MODULES):
            res["wanda"][l, j] = (model.W[l][m].abs() * torch.sqrt(xsq[(l, m)])[None, :]).sum().item()
    mu = {k: v / npos for k, v in ysum.items()}
    for s, cp in zip(data, passes):
        for l in range(L):
            for j, m in enumerate(MODULES):
                key = (l, m)
                y0 = cp["y"][key]
                res["ablate"][l, j] += loss_with(model, s, {key: ("replace", torch.zeros_like(y0))}).item() - cp["loss"]
                res["ablate-mean"][l, j] += loss_with(model, s, {key: ("replace", mu[key].expand_as(y0))}).item() - cp["loss"]
                res["ig"][l, j] += ig_one(model, s, y0, key, steps)
    res["ig.delta"] = res["ablate"].copy()      # Delta_m = sum_s [L_s(y_m := 0) - L_s]
    res["block-influence"] = bi_sum / bi_n
    return res, passes


def ig_gap(ig, delta):
    return float(np.abs(ig - delta).sum() / np.abs(delta).sum())


def spearman(a, b):
    def rank(v):
        v = np.round(v.ravel(), 9)                # equal columns tie exactly
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=float)
        for u in np.unique(v):                    # average ranks of ties
            idx = v == u
            r[idx] = r[idx].mean()
        return r
    ra, rb = rank(a), rank(b)
    return float(np.corrcoef(ra, rb)[0, 1])


# ---------------------------------------------------------------------------
# Tiny random models
# ---------------------------------------------------------------------------

TINY_SPECS = {
    "tiny-qwen2": dict(arch="qwen2", n_layer=3, dim=32, n_head=4, n_kv=2, head_dim=8, ffn=64, vocab=96,
                       bias=True, tied=False, rope_theta=1e6, seed=1001),
    "tiny-qwen3": dict(arch="qwen3", n_layer=3, dim=32, n_head=4, n_kv=2, head_dim=16, ffn=48, vocab=96,
                       bias=False, tied=True, rope_theta=1e6, seed=1002),
    "tiny-llama-untied": dict(arch="llama", n_layer=2, dim=32, n_head=4, n_kv=4, head_dim=8, ffn=40, vocab=80,
                              bias=False, tied=False, rope_theta=10000.0, seed=1003),
    "tiny-gemma3": dict(arch="gemma3", n_layer=4, dim=32, n_head=2, n_kv=1, head_dim=16, ffn=48, vocab=96,
                        bias=False, tied=True, rope_theta=1e6, seed=1004),
}


def tiny_config(sp):
    a = sp["arch"]
    base = {
        "hidden_size": sp["dim"], "intermediate_size": sp["ffn"], "num_hidden_layers": sp["n_layer"],
        "num_attention_heads": sp["n_head"], "num_key_value_heads": sp["n_kv"], "head_dim": sp["head_dim"],
        "vocab_size": sp["vocab"], "max_position_embeddings": 128, "rms_norm_eps": 1e-6,
        "rope_theta": sp["rope_theta"], "tie_word_embeddings": sp["tied"],
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float32",
        "initializer_range": 0.02, "use_cache": True, "attention_dropout": 0.0,
    }
    if a == "llama":
        base.update(architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu",
                    attention_bias=False, mlp_bias=False, rms_norm_eps=1e-5)
    elif a == "qwen2":
        base.update(architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_act="silu",
                    use_sliding_window=False, sliding_window=None, max_window_layers=sp["n_layer"])
    elif a == "qwen3":
        base.update(architectures=["Qwen3ForCausalLM"], model_type="qwen3", hidden_act="silu",
                    attention_bias=False, use_sliding_window=False, sliding_window=None,
                    max_window_layers=sp["n_layer"])
    elif a == "gemma3":
        base.update(architectures=["Gemma3ForCausalLM"], model_type="gemma3_text",
                    hidden_activation="gelu_pytorch_tanh", attention_bias=False,
                    sliding_window=4, sliding_window_pattern=2,
                    layer_types=["sliding_attention" if (i + 1) % 2 else "full_attention"
                                 for i in range(sp["n_layer"])],
                    rope_local_base_freq=10000.0,
                    # 24, not head_dim (16): a C engine that ignores it and uses
                    # head_dim^-0.5 must fail the reference test
                    query_pre_attn_scalar=24,
                    final_logit_softcapping=None, attn_logit_softcapping=None,
                    bos_token_id=2, eos_token_id=1, pad_token_id=0)   # gemma's ids
    return base


def tiny_weights(sp):
    gen = torch.Generator().manual_seed(sp["seed"])
    rn = lambda *shape, std=0.2: torch.randn(*shape, generator=gen, dtype=torch.float64) * std
    D, H, KV, hd, Fd, V = sp["dim"], sp["n_head"], sp["n_kv"], sp["head_dim"], sp["ffn"], sp["vocab"]
    g = sp["arch"] == "gemma3"
    norm = (lambda d: rn(d, std=0.1)) if g else (lambda d: 1.0 + rn(d, std=0.1))
    # tied: the output head is the embedding, keep logits moderate
    t = {"model.embed_tokens.weight": rn(V, D, std=0.15 if sp["tied"] else 0.5)}
    for l in range(sp["n_layer"]):
        p = f"model.layers.{l}."
        t[p + "input_layernorm.weight"] = norm(D)
        t[p + "self_attn.q_proj.weight"] = rn(H * hd, D)
        t[p + "self_attn.k_proj.weight"] = rn(KV * hd, D)
        t[p + "self_attn.v_proj.weight"] = rn(KV * hd, D)
        t[p + "self_attn.o_proj.weight"] = rn(D, H * hd)
        if sp["bias"]:
            t[p + "self_attn.q_proj.bias"] = rn(H * hd)
            t[p + "self_attn.k_proj.bias"] = rn(KV * hd)
            t[p + "self_attn.v_proj.bias"] = rn(KV * hd)
        if sp["arch"] in ("qwen3", "gemma3"):
            t[p + "self_attn.q_norm.weight"] = norm(hd)
            t[p + "self_attn.k_norm.weight"] = norm(hd)
        t[p + "post_attention_layernorm.weight"] = norm(D)
        if g:
            t[p + "pre_feedforward_layernorm.weight"] = norm(D)
            t[p + "post_feedforward_layernorm.weight"] = norm(D)
        t[p + "mlp.gate_proj.weight"] = rn(Fd, D)
        t[p + "mlp.up_proj.weight"] = rn(Fd, D)
        t[p + "mlp.down_proj.weight"] = rn(D, Fd)
    t["model.norm.weight"] = norm(D)
    if not sp["tied"]:
        t["lm_head.weight"] = rn(V, D, std=0.2)
    return {k: v.to(torch.float32).contiguous() for k, v in sorted(t.items())}


def write_tiny(name):
    sp = TINY_SPECS[name]
    d = DATA / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(tiny_config(sp), indent=2) + "\n")
    save_file(tiny_weights(sp), str(d / "model.safetensors"),
              metadata={"format": "pt", "source": f"tests/ref/gen_torch_ref.py, random, seed {sp['seed']}"})
    return d


# ---------------------------------------------------------------------------
# HF transformers cross-check
# ---------------------------------------------------------------------------

class _Float64Softmax:
    """HF eager attention calls softmax(..., dtype=torch.float32); keep float64."""

    def __enter__(self):
        self.orig = torch.nn.functional.softmax

        def sm(inp, dim=None, _stacklevel=3, dtype=None):
            if dtype is torch.float32 and inp.dtype == torch.float64:
                dtype = None
            return self.orig(inp, dim=dim, dtype=dtype)
        torch.nn.functional.softmax = sm
        return self

    def __exit__(self, *a):
        torch.nn.functional.softmax = self.orig


def hf_patch_float64(hf):
    """Make HF's float32 islands float64: RMSNorm, RoPE angles, Gemma embed_scale."""
    cfg = hf.config
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    for mod in hf.modules():
        cn = type(mod).__name__
        if cn.endswith("RMSNorm"):
            gem = cn.startswith("Gemma")
            eps = getattr(mod, "eps", None)
            if eps is None:
                eps = mod.variance_epsilon

            def fwd(x, mod=mod, gem=gem, eps=eps):
                y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
                return y * ((1.0 + mod.weight) if gem else mod.weight)
            mod.forward = fwd
        elif cn.endswith("RotaryEmbedding"):
            def rfwd(x, position_ids, layer_type=None, mod=mod):
                rp = cfg.rope_parameters
                p = rp[layer_type] if layer_type is not None else rp
                assert p.get("rope_type", "default") == "default"
                i = torch.arange(0, hd, 2, dtype=DT)
                inv = 1.0 / (p["rope_theta"] ** (i / hd))
                fr = position_ids[..., None].to(DT) * inv
                emb = torch.cat((fr, fr), dim=-1)
                return emb.cos().to(x.dtype), emb.sin().to(x.dtype)
            mod.forward = rfwd
        elif cn.endswith("ScaledWordEmbedding"):
            mod.embed_scale = torch.tensor(mod.scalar_embed_scale, dtype=DT)


def hf_load(path, arch):
    import transformers as tf
    tf.utils.logging.disable_progress_bar()
    tf.utils.logging.set_verbosity_error()
    cls = {"llama": tf.LlamaForCausalLM, "mistral": tf.MistralForCausalLM, "qwen2": tf.Qwen2ForCausalLM,
           "qwen3": tf.Qwen3ForCausalLM, "gemma3": tf.Gemma3ForCausalLM}[arch]
    hf, info = cls.from_pretrained(str(path), dtype=torch.float64, attn_implementation="eager",
                                   output_loading_info=True)
    bad = [k for k in info.get("missing_keys", []) if k != "lm_head.weight"] + list(info.get("unexpected_keys", []))
    assert not bad, f"{path}: HF loading: {bad}"
    hf.eval()
    return hf


def hf_check(model, data, tol=1e-9):
    """Returns dict of diffs; raises if the patched float64 logits differ > tol."""
    if importlib.util.find_spec("transformers") is None:
        warnings.warn("transformers not installed: HF cross-check SKIPPED")
        return None
    out = {}
    hf = hf_load(model.path, model.arch)
    raw = 0.0
    with torch.no_grad():
        for s in data:
            lg = hf(s["tokens"][None]).logits[0]
            raw = max(raw, (lg - model.forward(s["tokens"])[0]).abs().max().item())
    hf_patch_float64(hf)
    lg_diff, gr_diff = 0.0, 0.0
    with _Float64Softmax():
        for s in data:
            hf.zero_grad()
            lg = hf(s["tokens"][None]).logits
            Lh = seq_loss(lg, s["tokens"], s["mask"])[0]
            Lh.backward()
            cp = clean_pass(model, s)
            lg_diff = max(lg_diff, (lg[0].detach() - cp["logits"]).abs().max().item())
            for l in range(model.n_layer):
                for m in MODULES:
                    gh = hf.get_parameter(f"model.layers.{l}.{HF_PROJ[m]}.weight").grad
                    g = cp["G"][l][m]
                    gr_diff = max(gr_diff, ((gh - g).abs().max() / g.abs().max().clamp_min(1e-300)).item())
    out = {"logits_raw": raw, "logits": lg_diff, "grad_rel": gr_diff}
    print(f"  HF {type(hf).__name__}: max|logit diff| float64-patched {lg_diff:.3e} "
          f"(HF as shipped, float32 norm/rope/softmax: {raw:.3e}); max rel dL/dW diff {gr_diff:.3e}")
    if not (lg_diff <= tol):
        raise SystemExit(f"FAIL: {model.path.name}: logits differ from HF by {lg_diff:.3e} > {tol}")
    if not (gr_diff <= 1e-8):
        raise SystemExit(f"FAIL: {model.path.name}: weight grads differ from HF by {gr_diff:.3e}")
    if not (raw <= 1e-3):
        raise SystemExit(f"FAIL: {model.path.name}: unpatched HF logits differ by {raw:.3e}")
    return out


# ---------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------

def make_seq(tokens, mask):
    t = torch.tensor(tokens, dtype=torch.long)
    mk = torch.tensor(mask, dtype=DT)
    assert mk.shape == t.shape and mk[-1] == 0
    return {"tokens": t, "mask": mk}


def stories_data(model):
    from_bos = greedy(model, [model.bos], 39)                    # s0: BOS + 39 greedy tokens
    assert len(from_bos) == 40, "EOS inside the greedy continuation"
    s0 = make_seq(from_bos, [1] * 39 + [0])
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise SystemExit("the `tokenizers` package is needed to encode the stories260K sequence s1")
    tk = Tokenizer.from_file(str(model.path / "tokenizer.json"))
    ids = tk.encode(S1_TEXT, add_special_tokens=True).ids       # BOS + text
    n = len(ids)
    c = n // 2                                                  # completion = tokens c..n-1
    mask = [1 if (i + 1 >= c and i < n - 1) else 0 for i in range(n)]
    return [s0, make_seq(ids, mask)]


def tiny_data(model, seed):
    gen = torch.Generator().manual_seed(seed)
    r = lambda n: [model.bos] + torch.randint(3, model.vocab, (n - 1,), generator=gen).tolist()
    s0 = make_seq(r(12), [1] * 11 + [0])
    s1 = make_seq(r(9), [0, 1, 1, 0, 1, 0, 1, 1, 0])           # partial, non-contiguous
    return [s0, s1]


# ---------------------------------------------------------------------------
# Sanity checks
# ---------------------------------------------------------------------------

def close(a, b, rtol=1e-9, scale=None):
    scale = scale if scale is not None else max(np.abs(a).max(), np.abs(b).max(), 1e-300)
    return float(np.abs(a - b).max() / scale)


def sanity(name, model, res, data):
    Q, K, V, O, UP, DOWN, GATE = range(7)
    ok = True

    def check(cond, msg):
        nonlocal ok
        print(f"  [{'ok' if cond else 'FAIL'}] {msg}")
        ok = ok and cond

    for meth in ["act-grad", "ig", "ablate"]:
        m = res[meth]
        sc = np.abs(m).max()
        pairs = [("v", "o", V, O), ("up", "down", UP, DOWN)]
        # zeroing q or k zeroes the scores even through a q/k norm (rmsnorm(0) = 0)
        if not model.qk_norm or meth == "ablate":
            pairs.insert(0, ("q", "k", Q, K))
        for a, b, i, j in pairs:
            e = close(m[:, i], m[:, j], scale=sc)
            check(e < 1e-9, f"{meth}: {a} == {b} columns (max rel diff {e:.1e})")
        if model.qk_norm and meth != "ablate":
            e = close(m[:, Q], m[:, K], scale=sc)
            print(f"  [info] {meth}: q vs k columns differ by {e:.2e} (q/k norms break the identity)")
    m = res["ablate"]
    e = max(close(m[:, GATE], m[:, UP], scale=np.abs(m).max()), close(m[:, GATE], m[:, DOWN], scale=np.abs(m).max()))
    check(e < 1e-9, f"ablate: gate == up == down (max rel diff {e:.1e})")
    ag = res["act-grad"]
    if model.qk_norm:
        r = np.abs(ag[:, [Q, K]]).max() / np.abs(ag).max()
        check(r < 1e-4, f"act-grad q, k columns ~0 (max |q,k| / max |all| = {r:.1e})")
    if model.post_norms:
        r = np.abs(ag[:, [V, O, UP, DOWN]]).max() / np.abs(ag).max()
        check(r < 1e-4, f"act-grad v, o, up, down columns ~0 with post norms ({r:.1e})")
    # act-grad == -dL/dalpha at alpha = 1, by central difference
    eps, worst = 1e-5, 0.0
    fd = np.zeros_like(ag)
    for s in data:
        for l in range(model.n_layer):
            for j, mm in enumerate(MODULES):
                lp = loss_with(model, s, {(l, mm): ("scale", 1 + eps)}).item()
                lm = loss_with(model, s, {(l, mm): ("scale", 1 - eps)}).item()
                fd[l, j] += -(lp - lm) / (2 * eps)
    worst = close(ag, fd, scale=np.abs(ag).max())
    check(worst < 1e-6, f"act-grad == -dL/dalpha (central difference, eps 1e-5): max rel diff {worst:.1e}")
    gap = ig_gap(res["ig"], res["ig.delta"])
    per = np.abs(res["ig"] - res["ig.delta"]).max() / np.abs(res["ig.delta"]).max()
    print(f"  IG completeness gap ({IG_STEPS} midpoint steps): {gap:.3e}   "
          f"(max_m |IG_m - Delta_m| / max_m |Delta_m| = {per:.3e})")
    return ok, gap


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------

def f32(x):
    return torch.as_tensor(np.asarray(x), dtype=torch.float64).to(torch.float32).contiguous()


def run_model(name, path, use_hf, tiny_seed=None):
    print(f"== {name}  ({path})")
    model = RefModel(path)
    print(f"  arch {model.arch}: {model.n_layer} layers, dim {model.dim}, heads {model.n_head}/{model.n_kv}, "
          f"head_dim {model.head_dim}, ffn {model.ffn}, vocab {model.vocab}, tied {model.tied}, "
          f"windows {model.window}, theta {model.theta}, attn_scale {model.attn_scale:.6g}")
    stories = tiny_seed is None
    if stories:
        data = stories_data(model)
        gr = greedy(model, [model.bos], 30)
    else:
        data = tiny_data(model, tiny_seed)
        gr = greedy(model, [model.bos], 10)
        assert model.eos not in gr[1:], "tiny model greedy hit EOS; change the seed"
    if stories:
        from tokenizers import Tokenizer
        tk = Tokenizer.from_file(str(model.path / "tokenizer.json"))
        text = tk.decode(gr, skip_special_tokens=True)
        print(f"  greedy from BOS (30 new): {text!r}")
        if not (text.startswith(STORIES_TEXT.strip()) or STORIES_TEXT.strip().startswith(text)):
            raise SystemExit(f"FAIL: stories greedy text {text!r} != {STORIES_TEXT!r}")
        print(f"  [ok] greedy text matches the known story; s1 = {tk.decode(data[1]['tokens'].tolist())!r}")
    if use_hf:
        hf_check(model, data)
    if not use_hf:
        warnings.warn("HF cross-check disabled (--no-hf)")
    res, passes = compute_methods(model, data)
    ok, gap = sanity(name, model, res, data)
    if stories:
        for a, b in [("act-grad", "ig"), ("act-grad", "ablate"), ("ig", "ablate")]:
            print(f"  Spearman rank corr {a} vs {b}: {spearman(res[a], res[b]):+.4f}")
    # ---- write the reference file
    t = {}
    for i, (s, cp) in enumerate(zip(data, passes)):
        t[f"s{i}.tokens"] = f32(s["tokens"].numpy())
        t[f"s{i}.mask"] = f32(s["mask"].numpy())
        t[f"s{i}.logits"] = f32(cp["logits"].numpy())
        t[f"s{i}.loss"] = f32([cp["loss"]])
    for l in range(model.n_layer):
        for m in MODULES:
            t[f"s0.grad.{l}.{m}"] = f32(passes[0]["G"][l][m].numpy())
    t["greedy"] = f32(gr)
    for k, v in res.items():
        t[f"method.{k}"] = f32(v)
    loss_sum = sum(cp["loss"] for cp in passes)
    n_tgt = int(sum(s["mask"].sum().item() for s in data))
    t["stat.loss_sum"] = f32([loss_sum])
    t["stat.n_targets"] = f32([n_tgt])
    t["stat.ppl"] = f32([math.exp(loss_sum / n_tgt)])
    t["stat.ig_gap"] = f32([gap])
    meta = {"model": name, "ig_steps": str(IG_STEPS), "modules": ",".join(MODULE_NAMES),
            "generator": "tests/ref/gen_torch_ref.py", "precision": "computed in float64, stored F32",
            "loss_sum_f64": repr(loss_sum), "ig_gap_f64": repr(gap)}
    # (HF diffs are printed, not stored: the file must not depend on whether
    # or which transformers is installed)
    OUT.mkdir(parents=True, exist_ok=True)
    fp = OUT / f"{name}.safetensors"
    save_file(t, str(fp), metadata=meta)
    print(f"  wrote {fp.relative_to(REPO)} ({fp.stat().st_size} bytes, {len(t)} tensors); "
          f"loss_sum {loss_sum:.6f} over {n_tgt} targets")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="*", default=None, help="subset: stories260K-hf " + " ".join(TINY))
    ap.add_argument("--no-hf", action="store_true", help="skip the transformers cross-check")
    a = ap.parse_args()
    names = a.models or (["stories260K-hf"] + TINY)
    all_ok = True
    for name in names:
        if name == "stories260K-hf":
            p = models_dir() / "stories260K-hf"
            if not (p / "config.json").exists():
                raise SystemExit(f"{p}: not found (set LM_MODELS)")
            all_ok &= run_model(name, p, not a.no_hf)
        else:
            p = write_tiny(name)
            all_ok &= run_model(name, p, not a.no_hf, tiny_seed=TINY_SPECS[name]["seed"] + 7)
    total = sum(f.stat().st_size for f in OUT.glob("*.safetensors"))
    print(f"tests/data/ref: {total} bytes in all")
    if not all_ok:
        raise SystemExit("FAIL: sanity checks failed")
    print("all checks passed")


if __name__ == "__main__":
    main()
