#!/usr/bin/env python3
"""torch_attr.py -- the PyTorch peer of `layermap attribute MODEL --data FILE
--method grad-weight --seq-len 512` (and, with --forward-only, of the forward
pass of `layermap ppl`), to compare speed, memory and the matrix itself.

    $(scripts/ref_venv.sh) bench/torch_attr.py MODEL.gguf --data data/calib.txt \
        [--ids IDS.txt] [--seq-len 512] [--max-tokens N] [--threads 2] \
        [--csv out.csv] [--json stats.json] [--forward-only] [--attn sdpa|explicit]

What it does (docs/METHODS.md is the definition; the model is Llama only):

- Loads the GGUF with the `gguf` package and dequantizes every tensor to
  float32 with gguf.quants.dequantize (the same bits layermap's dequantizers
  produce: tests/test_real.c checks layermap against this package).
- q/k rows: GGUF `llama` files store them in Meta order (the two halves of
  each RoPE pair interleaved); they are un-permuted here to the HF rotate-half
  order, so RoPE is the rotate-half one, as in layermap (whose loader does the
  same un-permutation). Both orders give the same model and the same sum
  |W * dL/dW| per module (a row permutation of W and of its gradient).
- Plain torch float32: nn.Parameter for the 7 linear weights of every layer
  (the only tensors with requires_grad, as in layermap: embeddings and norms
  get no gradient), RMSNorm via F.rms_norm, rotate-half RoPE with theta from
  the metadata (angles in float64, then cos/sin in float32), GQA attention via
  F.scaled_dot_product_attention(is_causal=True, enable_gqa=True) by default
  (--attn explicit: q k^T, causal mask, softmax, @ v, kv heads repeated), SiLU
  MLP, tied output (token_embd) unless the file has output.weight.
- Token ids: --ids FILE (whitespace-separated ints, as `layermap tokenize MODEL
  -f FILE --no-bos --ids` prints them) so that both tools see identical tokens;
  otherwise `build/layermap tokenize` is run on --data; if that fails, the
  GGUF's byte-level BPE vocab/merges are loaded into the `tokenizers` package
  (gpt2/smollm pre-tokenizer only). The ids are cut into chunks of --seq-len
  tokens exactly as layermap's src/data.c does for plain text: BOS first when
  tokenizer.ggml.add_bos_token says so (BOS counts in seq-len; SmolLM2 adds
  none), a last short chunk kept when it has >= 2 tokens, --max-tokens cuts
  the last chunk.
- Per sequence: forward, loss = SUM of next-token NLL over every position,
  backward, then acc[layer, module] += sum |W * W.grad| (float64 sum), grads
  dropped. --forward-only: the same forward under torch.inference_mode()
  (full-vocab logits for every position, as `layermap ppl` does), no backward.
- Reports (stderr, and --json): tokens, seconds, tokens/s of the compute
  (load and dequantization excluded; reported separately as load_s), per-
  sequence times, peak RSS (resource.getrusage ru_maxrss), torch version,
  threads, the loss. --csv writes the 30 x 7 matrix in layermap's format.
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = ["q", "k", "v", "o", "up", "down", "gate"]
MODULE_NAMES = ["attn.q", "attn.k", "attn.v", "attn.o", "mlp.up", "mlp.down", "mlp.gate"]
GGUF_NAMES = {"q": "attn_q", "k": "attn_k", "v": "attn_v", "o": "attn_output",
              "up": "ffn_up", "down": "ffn_down", "gate": "ffn_gate"}


def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


# ---------------------------------------------------------------------------
# GGUF loading
# ---------------------------------------------------------------------------

def unpermute(w, n_head):
    """Meta/GGUF interleaved RoPE rows -> HF rotate-half rows (inverse of
    llama.cpp's convert_hf_to_gguf permute)."""
    rows, cols = w.shape
    return (w.reshape(n_head, rows // n_head // 2, 2, cols)
             .swapaxes(1, 2).reshape(rows, cols))


class GGUFLlama:
    def __init__(self, path):
        import gguf
        from gguf.quants import dequantize
        self.path = path
        r = gguf.GGUFReader(path)

        def field(name, default=None):
            f = r.fields.get(name)
            return default if f is None else f.contents()

        arch = field("general.architecture")
        if arch != "llama":
            raise SystemExit(f"{path}: architecture {arch!r}: this benchmark implements llama only")
        self.n_layer = int(field("llama.block_count"))
        self.dim = int(field("llama.embedding_length"))
        self.ffn = int(field("llama.feed_forward_length"))
        self.n_head = int(field("llama.attention.head_count"))
        self.n_kv = int(field("llama.attention.head_count_kv", self.n_head))
        self.eps = float(field("llama.attention.layer_norm_rms_epsilon", 1e-5))
        self.theta = float(field("llama.rope.freq_base", 10000.0))
        self.head_dim = int(field("llama.attention.key_length", self.dim // self.n_head))
        rope_dim = int(field("llama.rope.dimension_count", self.head_dim))
        if rope_dim != self.head_dim:
            raise SystemExit(f"{path}: partial RoPE ({rope_dim} of {self.head_dim}) not implemented")
        if field("llama.rope.scaling.type", "none") not in ("none", None):
            raise SystemExit(f"{path}: RoPE scaling not implemented")
        tmodel = field("tokenizer.ggml.model", "llama")
        self.tok_model = tmodel
        self.bos = field("tokenizer.ggml.bos_token_id")
        # layermap's (and llama.cpp's) default: SPM and llama3 vocabularies add BOS
        self.add_bos = bool(field("tokenizer.ggml.add_bos_token",
                                  tmodel == "llama" or field("tokenizer.ggml.pre") == "llama-bpe"))

        tensors = {t.name: t for t in r.tensors}

        def deq(name):
            t = tensors[name]
            a = dequantize(t.data, t.tensor_type)
            a = np.array(a, dtype=np.float32)          # a writable copy (F32 tensors are views of the mmap)
            shape = [int(x) for x in reversed(t.shape)]        # GGUF ne[] -> torch order
            return torch.from_numpy(a.reshape(shape))

        self.embed = deq("token_embd.weight")
        self.vocab = self.embed.shape[0]
        self.out_norm = deq("output_norm.weight")
        self.lm_head = deq("output.weight") if "output.weight" in tensors else self.embed
        self.tied = "output.weight" not in tensors
        self.attn_norm, self.ffn_norm, self.W = [], [], []
        for l in range(self.n_layer):
            self.attn_norm.append(deq(f"blk.{l}.attn_norm.weight"))
            self.ffn_norm.append(deq(f"blk.{l}.ffn_norm.weight"))
            if any(f"blk.{l}.{n}.bias" in tensors for n in ("attn_q", "attn_k", "attn_v")):
                raise SystemExit(f"{path}: q/k/v biases not implemented")
            w = {}
            for m in MODULES:
                a = deq(f"blk.{l}.{GGUF_NAMES[m]}.weight")
                if m == "q":
                    a = unpermute(a, self.n_head)
                elif m == "k":
                    a = unpermute(a, self.n_kv)
                w[m] = nn.Parameter(a.contiguous(), requires_grad=True)
            self.W.append(w)

    def params(self):
        return [self.W[l][m] for l in range(self.n_layer) for m in MODULES]


# ---------------------------------------------------------------------------
# The model (docs/METHODS.md, Llama)
# ---------------------------------------------------------------------------

def rope_tables(n, head_dim, theta):
    inv = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    ang = torch.arange(n, dtype=torch.float64)[:, None] * inv[None, :]
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos().to(torch.float32), ang.sin().to(torch.float32)


def rope(x, cos, sin):
    """x (heads, n, head_dim), rotate-half."""
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def attention(q, k, v, n_rep, kind):
    """q (H, n, d), k/v (Hkv, n, d) -> (n, H*d)."""
    H, n, d = q.shape
    if kind == "sdpa":
        o = F.scaled_dot_product_attention(q[None], k[None], v[None], is_causal=True,
                                           scale=d ** -0.5, enable_gqa=n_rep > 1)[0]
    else:
        if n_rep > 1:
            k = k.repeat_interleave(n_rep, dim=0)
            v = v.repeat_interleave(n_rep, dim=0)
        s = (q @ k.transpose(1, 2)) * d ** -0.5
        mask = torch.ones(n, n, dtype=torch.bool).triu(1)
        s = s.masked_fill(mask, float("-inf"))
        o = torch.softmax(s, dim=-1) @ v
    return o.transpose(0, 1).reshape(n, H * d)


def forward(M, tok, attn_kind, tables):
    """Logits (n, vocab) of one sequence."""
    n = tok.shape[0]
    cos, sin = tables
    cos, sin = cos[:n], sin[:n]
    H, Hkv, hd = M.n_head, M.n_kv, M.head_dim
    h = M.embed[tok]
    for l in range(M.n_layer):
        W = M.W[l]
        x = F.rms_norm(h, (M.dim,), M.attn_norm[l], M.eps)
        q = (x @ W["q"].t()).view(n, H, hd).transpose(0, 1)
        k = (x @ W["k"].t()).view(n, Hkv, hd).transpose(0, 1)
        v = (x @ W["v"].t()).view(n, Hkv, hd).transpose(0, 1)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        att = attention(q, k, v, H // Hkv, attn_kind)
        h = h + att @ W["o"].t()
        x2 = F.rms_norm(h, (M.dim,), M.ffn_norm[l], M.eps)
        a = F.silu(x2 @ W["gate"].t()) * (x2 @ W["up"].t())
        h = h + a @ W["down"].t()
    return F.rms_norm(h, (M.dim,), M.out_norm, M.eps) @ M.lm_head.t()


# ---------------------------------------------------------------------------
# Tokens
# ---------------------------------------------------------------------------

def tokens_from_layermap(model, data, binary):
    p = subprocess.run([binary, "tokenize", model, "-f", data, "--no-bos", "--ids"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}")
    return [int(x) for x in p.stdout.split()]


def tokens_from_gguf(M, data):
    """Byte-level BPE from the GGUF vocab/merges in the `tokenizers` package
    (llama.cpp's gpt2 and smollm pre-tokenizers)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    import gguf
    r = gguf.GGUFReader(M.path)
    f = lambda k: r.fields[k].contents()
    if f("tokenizer.ggml.model") != "gpt2":
        raise SystemExit("fallback tokenizer: only gpt2 (byte-level BPE) vocabularies; use --ids")
    pre = r.fields.get("tokenizer.ggml.pre")
    pre = pre.contents() if pre else "default"
    if pre not in ("smollm", "gpt2", "gpt-2", "default"):
        raise SystemExit(f"fallback tokenizer: pre-tokenizer {pre!r} not implemented; use --ids")
    vocab = {t: i for i, t in enumerate(f("tokenizer.ggml.tokens"))}
    merges = [tuple(m.split(" ", 1)) for m in f("tokenizer.ggml.merges")]
    tk = Tokenizer(models.BPE(vocab, merges))
    bl = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), bl]) \
        if pre == "smollm" else bl
    with open(data, encoding="utf-8") as fh:
        text = fh.read()
    if text.startswith("\ufeff"):
        text = text[1:]
    return tk.encode(text, add_special_tokens=False).ids


def chunk(ids, seq_len, bos, max_tokens):
    """src/data.c load_text + add_seq for plain text (every prediction counts)."""
    body = seq_len - (bos is not None)
    seqs, total = [], 0
    for i in range(0, len(ids), body):
        if max_tokens and total >= max_tokens:
            break
        s = ([bos] if bos is not None else []) + ids[i:i + body]
        if max_tokens and total + len(s) > max_tokens:
            s = s[:max_tokens - total]
        if len(s) < 2:
            continue
        seqs.append(torch.tensor(s, dtype=torch.long))
        total += len(s)
    return seqs


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------

def write_csv(path, acc):
    with open(path, "w") as f:
        f.write("layer," + ",".join(MODULE_NAMES) + "\n")
        for l in range(acc.shape[0]):
            f.write(f"{l}," + ",".join(repr(float(x)) for x in acc[l]) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="a llama GGUF")
    ap.add_argument("--data", help="plain text file (tokenized by build/layermap, else by the GGUF vocab)")
    ap.add_argument("--ids", help="file of token ids (no BOS), whitespace separated")
    ap.add_argument("--layermap", default=os.path.join(ROOT, "build", "layermap"), help="layermap binary for tokenizing")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--max-tokens", type=int, default=0, help="stop after N tokens (0 = all)")
    ap.add_argument("--method", default="grad-weight", choices=["grad-weight"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "explicit"])
    ap.add_argument("--forward-only", action="store_true", help="forward (full-vocab logits) only, no gradients")
    ap.add_argument("--warmup", action="store_true", help="one untimed pass on the first sequence first")
    ap.add_argument("--csv", help="write the matrix (layermap's CSV format)")
    ap.add_argument("--json", help="write the run statistics as JSON")
    a = ap.parse_args()
    if not a.ids and not a.data:
        ap.error("--data or --ids is needed")

    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    M = GGUFLlama(a.model)
    load_s = time.perf_counter() - t0
    rss_load = rss_mib()

    tok_src = None
    if a.ids:
        with open(a.ids) as f:
            ids = [int(x) for x in f.read().split()]
        tok_src = f"ids file {a.ids}"
    else:
        try:
            ids = tokens_from_layermap(a.model, a.data, a.layermap)
            tok_src = f"{a.layermap} tokenize"
        except (OSError, RuntimeError) as e:
            print(f"torch_attr: layermap tokenize failed ({e}); using the GGUF vocab in `tokenizers`", file=sys.stderr)
            ids = tokens_from_gguf(M, a.data)
            tok_src = "tokenizers (GGUF vocab)"
    seqs = chunk(ids, a.seq_len, M.bos if M.add_bos else None, a.max_tokens)
    if not seqs:
        raise SystemExit("torch_attr: no sequence")
    n_tok = sum(len(s) for s in seqs)
    tables = rope_tables(max(len(s) for s in seqs), M.head_dim, M.theta)
    params = M.params()

    def one(tok):
        if a.forward_only:
            with torch.inference_mode():
                logits = forward(M, tok, a.attn, tables)
                return F.cross_entropy(logits[:-1], tok[1:], reduction="sum").item()
        logits = forward(M, tok, a.attn, tables)
        loss = F.cross_entropy(logits[:-1], tok[1:], reduction="sum")
        del logits
        loss.backward()
        with torch.no_grad():
            for i, p in enumerate(params):
                acc_flat[i] += (p * p.grad).abs().sum(dtype=torch.float64).item()
                p.grad = None
        return loss.item()

    acc_flat = np.zeros(len(params), dtype=np.float64)
    if a.warmup:
        one(seqs[0])
        acc_flat[:] = 0.0
    per_seq, loss_sum = [], 0.0
    t1 = time.perf_counter()
    c1 = time.process_time()
    for s in seqs:
        ts = time.perf_counter()
        loss_sum += one(s)
        per_seq.append(time.perf_counter() - ts)
    secs = time.perf_counter() - t1
    cpu = time.process_time() - c1
    n_pred = sum(len(s) - 1 for s in seqs)
    acc = acc_flat.reshape(M.n_layer, len(MODULES))

    stats = {
        "tool": "torch", "mode": "forward" if a.forward_only else a.method,
        "model": os.path.basename(a.model), "tokens": n_tok, "predicted": n_pred, "sequences": len(seqs),
        "seq_len": a.seq_len, "seconds": secs, "tokens_per_s": n_tok / secs,
        "per_seq_s": per_seq, "cpu_s": cpu, "cpu_share": cpu / secs if secs > 0 else 0.0,
        "load_s": load_s, "rss_after_load_mib": rss_load, "peak_rss_mib": rss_mib(),
        "loss_per_token": loss_sum / n_pred, "ppl": float(np.exp(loss_sum / n_pred)),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "attn": a.attn,
        "tokens_from": tok_src, "python": platform.python_version(), "warmup": a.warmup,
    }
    if a.csv and not a.forward_only:
        write_csv(a.csv, acc)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(stats, f, indent=1)
    print(f"torch_attr: {stats['mode']}: {n_tok} tokens in {len(seqs)} sequences, loss {stats['loss_per_token']:.4f}/token "
          f"(ppl {stats['ppl']:.3f}), {secs:.2f} s, {stats['tokens_per_s']:.1f} tokens/s "
          f"(cpu {stats['cpu_share']:.2f} cores); load {load_s:.1f} s; peak RSS {stats['peak_rss_mib']:.0f} MiB; "
          f"torch {torch.__version__}, {stats['threads']} threads, attention {a.attn}", file=sys.stderr)


if __name__ == "__main__":
    main()
