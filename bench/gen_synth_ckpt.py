#!/usr/bin/env python3
"""gen_synth_ckpt.py -- a synthetic base / fine-tuned pair of sharded bf16 HF
checkpoints for bench/bench_diff.sh.

    gen_synth_ckpt.py OUT_DIR [--dim 2048 --ffn 5632 --layers 22 --heads 32
                               --kv-heads 4 --vocab 32000 --shard-mb 1000]

writes OUT_DIR/base and OUT_DIR/ft, each a Llama-shaped HF directory:
config.json, model-0000N-of-0000M.safetensors, model.safetensors.index.json.
The defaults are TinyLlama-1.1B's shape: about 2.2 GB per checkpoint.

Fast on purpose (numpy only, one tensor in memory at a time, no torch):
base weights are random bf16 bit patterns (sign, exponent 2^-7..2^-4, random
mantissa) made from raw random bytes. The fine-tuned weights are the base plus
a known update, varied by module so the heatmaps have structure:

    attn.q    low rank (r = 8), scale growing with depth
    attn.k    unchanged (identical bits)
    attn.v    low rank (r = 16)
    attn.o    unchanged, except the last quarter of layers: dense last-bit flips
    mlp.up    sparse: about 2% of entries nudged by 1-3 ulp
    mlp.gate  sparse, as up
    mlp.down  sparse; dense last-bit flips in the last quarter of layers

Writes OUT_DIR/synth.json with the shapes and byte counts.
"""
import argparse
import json
import os
import time

import numpy as np

HF = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
      "up": "mlp.up_proj", "down": "mlp.down_proj", "gate": "mlp.gate_proj"}


def tensor_list(a):
    hd = a.dim // a.heads
    q, kv = a.heads * hd, a.kv_heads * hd
    t = [("model.embed_tokens.weight", (a.vocab, a.dim), None, -1)]
    for i in range(a.layers):
        p = f"model.layers.{i}."
        t.append((p + "input_layernorm.weight", (a.dim,), None, i))
        t.append((p + "post_attention_layernorm.weight", (a.dim,), None, i))
        for mod, shape in (("q", (q, a.dim)), ("k", (kv, a.dim)), ("v", (kv, a.dim)), ("o", (a.dim, q)),
                           ("gate", (a.ffn, a.dim)), ("up", (a.ffn, a.dim)), ("down", (a.dim, a.ffn))):
            t.append((p + HF[mod] + ".weight", shape, mod, i))
    t.append(("model.norm.weight", (a.dim,), None, -1))
    t.append(("lm_head.weight", (a.vocab, a.dim), None, -1))
    return t


def random_bf16(rng, shape):
    """Random bf16 bits: random sign and mantissa, exponent 120..123."""
    n = int(np.prod(shape))
    r = np.frombuffer(rng.bytes(2 * n), dtype=np.uint16)
    e = ((r >> 7) & 3) + 120
    return ((r & 0x807F) | (e << 7)).astype(np.uint16).reshape(shape)


def bf16_to_f32(b):
    return (b.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(f):
    u = f.view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def fine_tune(rng, bits, mod, layer, n_layer):
    """The fine-tuned version of base bits of one module (see the docstring)."""
    late = layer >= n_layer - max(1, n_layer // 4)
    if mod in ("q", "v"):
        r = 8 if mod == "q" else 16
        m, n = bits.shape
        scale = 0.002 * (1 + 3 * layer / max(1, n_layer - 1))
        u = rng.standard_normal((m, r), dtype=np.float32)
        v = rng.standard_normal((r, n), dtype=np.float32) * np.float32(scale / np.sqrt(r))
        return f32_to_bf16(bf16_to_f32(bits) + u @ v)
    if mod == "k" or (mod == "o" and not late):
        return bits
    if mod in ("o", "down") and late:
        flip = np.frombuffer(rng.bytes(bits.size), dtype=np.uint8).reshape(bits.shape) & 1
        return bits ^ flip.astype(np.uint16)
    # sparse: ~2% of entries get +1..3 in the mantissa (stays finite: exponent <= 124)
    rb = np.frombuffer(rng.bytes(bits.size), dtype=np.uint8).reshape(bits.shape)
    out = bits.copy()
    hit = rb < 5
    out[hit] += (rb[hit] % 3 + 1).astype(np.uint16)
    return out


def plan_shards(tensors, shard_bytes):
    shards, cur, size = [], [], 0
    for name, shape, mod, layer in tensors:
        nb = 2 * int(np.prod(shape))
        if cur and size + nb > shard_bytes:
            shards.append(cur)
            cur, size = [], 0
        cur.append((name, shape, mod, layer))
        size += nb
    if cur:
        shards.append(cur)
    return shards


def header_bytes(shard):
    h, off = {"__metadata__": {"format": "pt"}}, 0
    for name, shape, _, _ in shard:
        nb = 2 * int(np.prod(shape))
        h[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + nb]}
        off += nb
    j = json.dumps(h, separators=(",", ":")).encode()
    j += b" " * (-len(j) % 8)
    return len(j).to_bytes(8, "little") + j


def config(a):
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": a.dim,
            "intermediate_size": a.ffn, "num_hidden_layers": a.layers, "num_attention_heads": a.heads,
            "num_key_value_heads": a.kv_heads, "head_dim": a.dim // a.heads, "vocab_size": a.vocab,
            "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
            "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": False, "bos_token_id": 1,
            "eos_token_id": 2, "torch_dtype": "bfloat16"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--ffn", type=int, default=5632)
    ap.add_argument("--layers", type=int, default=22)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--shard-mb", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1234)
    a = ap.parse_args()
    t0 = time.time()
    rng = np.random.default_rng(a.seed)
    tensors = tensor_list(a)
    shards = plan_shards(tensors, a.shard_mb * 1000 * 1000)
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    total = sum(2 * int(np.prod(s)) for _, s, _, _ in tensors)
    module_bytes = sum(2 * int(np.prod(s)) for _, s, m, _ in tensors if m)
    for side in ("base", "ft"):
        d = os.path.join(a.out, side)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(config(a), f, indent=1)
        wm = {name: names[i] for i, sh in enumerate(shards) for name, _, _, _ in sh}
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": wm}, f, indent=1)
    for i, sh in enumerate(shards):
        fb = open(os.path.join(a.out, "base", names[i]), "wb")
        ff = open(os.path.join(a.out, "ft", names[i]), "wb")
        hb = header_bytes(sh)
        fb.write(hb)
        ff.write(hb)
        for name, shape, mod, layer in sh:
            if len(shape) == 1:
                b = np.full(shape, 0x3F80, dtype=np.uint16)  # norms: 1.0
                fbits = b
            else:
                b = random_bf16(rng, shape)
                fbits = fine_tune(rng, b, mod, layer, a.layers) if mod else b
            fb.write(b.tobytes())
            ff.write(fbits.tobytes())
        for f in (fb, ff):
            f.flush()
            os.fsync(f.fileno())
            f.close()
        print(f"  shard {i + 1}/{len(shards)} written ({time.time() - t0:.1f} s)", flush=True)
    info = {"dim": a.dim, "ffn": a.ffn, "layers": a.layers, "heads": a.heads, "kv_heads": a.kv_heads,
            "vocab": a.vocab, "shards": len(shards), "checkpoint_bytes": total, "module_bytes": module_bytes,
            "seed": a.seed, "seconds": round(time.time() - t0, 1)}
    with open(os.path.join(a.out, "synth.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(json.dumps(info))


if __name__ == "__main__":
    main()
