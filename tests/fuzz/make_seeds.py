#!/usr/bin/env python3
"""Write raw seed inputs for the harnesses of tests/fuzz/ and the fixtures
they need; tests/fuzz/fuzz.sh --merge minimises the seeds into
tests/fuzz/corpus/NAME/ (what is committed and replayed).

Usage: tests/fuzz/make_seeds.py OUTDIR [MODELS]
  OUTDIR/NAME/*                 raw seeds, one directory per harness
  tests/fuzz/fixtures/micro-llama/config.json  a 1-layer, dim-8 llama (committed)
  tests/fuzz/fixtures/st_index/                 its two shards (committed)
Sources: tests/data (tiny models, the GGUF mutation corpus, tokenizers,
matrices) and the shared models (stories260K: GGUF metadata, tokenizer.json).
Only the standard library is used (struct, json): no gguf-py needed.
The checkpoint seeds come from the harness itself (LM_FUZZ_CKPT_SEEDS).
"""
import json
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "tests", "data")


def put(outdir, name, fname, data):
    d = os.path.join(outdir, name)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, fname), "wb") as f:
        f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


# ---- GGUF (little-endian): a minimal reader and writer --------------------

SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def gguf_read_kvs(b):
    """[(key, type, value)] of a GGUF file; arrays as (elem_type, [values])."""
    off = 8
    n_t, n_kv = struct.unpack_from("<QQ", b, off)
    off += 16

    def rstr(off):
        (n,) = struct.unpack_from("<Q", b, off)
        return b[off + 8:off + 8 + n].decode("utf-8", "surrogateescape"), off + 8 + n

    def rval(t, off):
        if t == 8:
            return rstr(off)
        fmt = "<" + SCALAR[t]
        return struct.unpack_from(fmt, b, off)[0], off + struct.calcsize(fmt)

    kvs = []
    for _ in range(n_kv):
        key, off = rstr(off)
        (t,) = struct.unpack_from("<I", b, off)
        off += 4
        if t == 9:
            et, cnt = struct.unpack_from("<IQ", b, off)
            off += 12
            vals = []
            for _ in range(cnt):
                v, off = rval(et, off)
                vals.append(v)
            kvs.append((key, 9, (et, vals)))
        else:
            v, off = rval(t, off)
            kvs.append((key, t, v))
    return kvs


def gguf_str(s):
    b = s.encode("utf-8", "surrogateescape") if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def gguf_val(t, v):
    if t == 8:
        return gguf_str(v)
    return struct.pack("<" + SCALAR[t], v)


def gguf_write(kvs, tensors, align=32):
    """tensors: [(name, ne list (ne[0] contiguous), ggml type, raw bytes)]."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)))
    for key, t, v in kvs:
        out += gguf_str(key) + struct.pack("<I", t)
        if t == 9:
            et, vals = v
            out += struct.pack("<IQ", et, len(vals))
            for x in vals:
                out += gguf_val(et, x)
        else:
            out += gguf_val(t, v)
    offs, o = [], 0
    for name, ne, gt, raw in tensors:
        offs.append(o)
        o += (len(raw) + align - 1) // align * align
    for (name, ne, gt, raw), off in zip(tensors, offs):
        out += gguf_str(name) + struct.pack("<I", len(ne)) + struct.pack("<%dQ" % len(ne), *ne)
        out += struct.pack("<IQ", gt, off)
    out += b"\0" * ((-len(out)) % align)
    for name, ne, gt, raw in tensors:
        out += raw + b"\0" * ((-len(raw)) % align)
    return bytes(out)


def f32(n, seed):
    vals = [((i * 2654435761 + seed * 40503) % 1000) / 1000.0 - 0.5 for i in range(n)]
    return struct.pack("<%df" % n, *vals)


def f16(n, seed):
    return struct.pack("<%de" % n, *[((i * 7 + seed) % 50) / 50.0 - 0.5 for i in range(n)])


def tiny_llama_gguf(tok_kvs, arch="llama", dim=8, ff=16, heads=2, kv_heads=1, layers=1, extra=(), f16_layers=False):
    """A whole tiny model of architecture arch with the given tokenizer metadata."""
    vocab = len([v for k, t, v in tok_kvs if k == "tokenizer.ggml.tokens"][0][1])
    hd = dim // heads
    kvs = [("general.architecture", 8, arch), ("general.name", 8, "tiny"),
           (arch + ".block_count", 4, layers), (arch + ".embedding_length", 4, dim),
           (arch + ".feed_forward_length", 4, ff), (arch + ".attention.head_count", 4, heads),
           (arch + ".attention.head_count_kv", 4, kv_heads), (arch + ".context_length", 4, 64),
           (arch + ".attention.layer_norm_rms_epsilon", 6, 1e-5), (arch + ".rope.freq_base", 6, 10000.0)]
    kvs += list(extra) + list(tok_kvs)
    ts = [("token_embd.weight", [dim, vocab], 0, f32(dim * vocab, 1)), ("output_norm.weight", [dim], 0, f32(dim, 2))]
    for il in range(layers):
        p = "blk.%d." % il
        wt, wf = (1, f16) if f16_layers else (0, f32)
        ts += [(p + "attn_norm.weight", [dim], 0, f32(dim, 3)),
               (p + "attn_q.weight", [dim, heads * hd], wt, wf(dim * heads * hd, 4)),
               (p + "attn_k.weight", [dim, kv_heads * hd], wt, wf(dim * kv_heads * hd, 5)),
               (p + "attn_v.weight", [dim, kv_heads * hd], wt, wf(dim * kv_heads * hd, 6)),
               (p + "attn_output.weight", [heads * hd, dim], wt, wf(dim * heads * hd, 7)),
               (p + "ffn_norm.weight", [dim], 0, f32(dim, 8)),
               (p + "ffn_gate.weight", [dim, ff], wt, wf(dim * ff, 9)),
               (p + "ffn_up.weight", [dim, ff], wt, wf(dim * ff, 10)),
               (p + "ffn_down.weight", [ff, dim], wt, wf(dim * ff, 11))]
        if arch == "qwen2":
            ts += [(p + "attn_q.bias", [heads * hd], 0, f32(heads * hd, 12)),
                   (p + "attn_k.bias", [kv_heads * hd], 0, f32(kv_heads * hd, 13)),
                   (p + "attn_v.bias", [kv_heads * hd], 0, f32(kv_heads * hd, 14))]
        if arch in ("qwen3", "gemma3"):
            ts += [(p + "attn_q_norm.weight", [hd], 0, f32(hd, 15)), (p + "attn_k_norm.weight", [hd], 0, f32(hd, 16))]
        if arch == "gemma3":
            ts += [(p + "post_attention_norm.weight", [dim], 0, f32(dim, 17)),
                   (p + "post_ffw_norm.weight", [dim], 0, f32(dim, 18))]
    return gguf_write(kvs, ts)


def gpt2_tok_kvs(tj):
    """GGUF "gpt2" tokenizer metadata from an HF byte-level BPE tokenizer.json."""
    j = json.loads(tj)
    vocab = j["model"]["vocab"]
    for a in j.get("added_tokens", []):
        vocab[a["content"]] = a["id"]
    n = max(vocab.values()) + 1
    toks = ["[PAD%d]" % i for i in range(n)]
    types = [1] * n
    for s, i in vocab.items():
        toks[i] = s
    for a in j.get("added_tokens", []):
        types[a["id"]] = 3 if a.get("special") else 4
    merges = [m if isinstance(m, str) else " ".join(m) for m in j["model"]["merges"]]
    return [("tokenizer.ggml.model", 8, "gpt2"), ("tokenizer.ggml.pre", 8, "llama-bpe"),
            ("tokenizer.ggml.tokens", 9, (8, toks)), ("tokenizer.ggml.token_type", 9, (5, types)),
            ("tokenizer.ggml.merges", 9, (8, merges)), ("tokenizer.ggml.bos_token_id", 4, 0),
            ("tokenizer.ggml.eos_token_id", 4, 1), ("tokenizer.ggml.add_bos_token", 7, True)]


# ---- safetensors -----------------------------------------------------------

def st_read(b):
    (n,) = struct.unpack_from("<Q", b, 0)
    return json.loads(b[8:8 + n]), b[8 + n:]


def st_write(tensors, meta=None):
    """tensors: [(name, dtype, shape, raw)]"""
    h, o = {}, 0
    if meta is not None:
        h["__metadata__"] = meta
    for name, dt, shape, raw in tensors:
        h[name] = {"dtype": dt, "shape": shape, "data_offsets": [o, o + len(raw)]}
        o += len(raw)
    hb = json.dumps(h, separators=(",", ":")).encode()
    hb += b" " * ((-len(hb)) % 8)
    return struct.pack("<Q", len(hb)) + hb + b"".join(t[3] for t in tensors)


GGML_BLOCK = {  # ggml type: (elements, bytes) per block, every type layermap decodes
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 10: (256, 84),
    11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 20: (32, 18), 23: (256, 136), 30: (1, 2)}


def dtype_gguf():
    """One 2-row tensor of every type layermap decodes (pseudo-random blocks)."""
    ts = []
    for gt, (be, bb) in sorted(GGML_BLOCK.items()):
        ne0 = 256 if be == 1 else be
        nb = 2 * (ne0 // be) * bb
        raw = bytes(((i * 131 + gt * 17) * 2654435761 >> 13) & 0xff for i in range(nb))
        if gt in (1, 30):  # keep F16/BF16 finite: small exponents
            raw = bytes(b & 0x3f if i % 2 else b for i, b in enumerate(raw))
        ts.append(("t%d.weight" % gt, [ne0, 2], gt, raw))
    return gguf_write([("general.architecture", 8, "llama")], ts)


MICRO_CFG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8,
             "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
             "head_dim": 4, "vocab_size": 16, "max_position_embeddings": 32, "rms_norm_eps": 1e-5,
             "rope_theta": 10000.0, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2}


def micro_tensors():
    """HF tensors of the micro llama (MICRO_CFG), some BF16."""
    d, f, v = 8, 16, 16
    bf16 = lambda n, seed: b"".join(struct.pack("<f", x)[2:] for x in struct.unpack("<%df" % n, f32(n, seed)))
    ts = [("model.embed_tokens.weight", "F32", [v, d], f32(v * d, 1)), ("model.norm.weight", "F32", [d], f32(d, 2)),
          ("lm_head.weight", "BF16", [v, d], bf16(v * d, 3))]
    p = "model.layers.0."
    ts += [(p + "input_layernorm.weight", "F32", [d], f32(d, 4)),
           (p + "post_attention_layernorm.weight", "F32", [d], f32(d, 5)),
           (p + "self_attn.q_proj.weight", "F32", [8, d], f32(8 * d, 6)),
           (p + "self_attn.k_proj.weight", "F16", [4, d], f16(4 * d, 7)),
           (p + "self_attn.v_proj.weight", "F16", [4, d], f16(4 * d, 8)),
           (p + "self_attn.o_proj.weight", "BF16", [d, 8], bf16(8 * d, 9)),
           (p + "mlp.gate_proj.weight", "F32", [f, d], f32(f * d, 10)),
           (p + "mlp.up_proj.weight", "F32", [f, d], f32(f * d, 11)),
           (p + "mlp.down_proj.weight", "F32", [d, f], f32(f * d, 12))]
    return ts


DICT_SOURCES = {  # harness: the sources whose string literals (keys, names, values) make its dictionary
    "gguf": ["src/format/gguf.c", "src/model/config.c", "src/model/model.c"],
    "safetensors": ["src/format/safetensors.c", "src/model/model.c"],
    "st_index": ["src/format/safetensors.c"],
    "config": ["src/model/config.c"],
    "tok_json": ["src/text/tok_load.c", "src/text/tokenizer.c"],
    "tok_encode": ["src/text/tokenizer.c"],
    "gguf_tok": ["src/text/tok_load.c", "src/format/gguf.c"],
    "jsonl": ["src/text/data.c"],
    "matrix": ["src/output/matrix.c"],
}


def write_dicts():
    """tests/fuzz/dict/NAME.dict: libFuzzer dictionaries of the readers' own words."""
    import re
    d = os.path.join(ROOT, "tests", "fuzz", "dict")
    os.makedirs(d, exist_ok=True)
    for name, srcs in DICT_SOURCES.items():
        words = set()
        for src in srcs:
            text = read(os.path.join(ROOT, src)).decode()
            for m in re.finditer(r'"((?:[^"\\\n]|\\.)*)"', text):
                w = m.group(1)
                if 2 <= len(w) <= 40 and "%" not in w and not w.startswith(" ") and "\\" not in w:
                    words.add(w)
        with open(os.path.join(d, name + ".dict"), "w") as f:
            f.write("# libFuzzer dictionary: string literals of %s (tests/fuzz/make_seeds.py)\n" % ", ".join(srcs))
            for w in sorted(words):
                f.write('"%s"\n' % w)
                if name in ("config", "tok_json", "st_index", "jsonl", "matrix", "safetensors"):
                    f.write('"\\"%s\\""\n' % w)  # as a JSON string too


def main():
    write_dicts()
    out = sys.argv[1]
    models = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "..", "shared", "models")
    stories = read(os.path.join(models, "stories260K.gguf"))
    st_kvs = gguf_read_kvs(stories)
    spm_tok = [kv for kv in st_kvs if kv[0].startswith("tokenizer.")]
    # the first 40 entries (control tokens and bytes first): small whole-model files
    spm40 = [(k, t, (v[0], v[1][:40]) if t == 9 else v) for k, t, v in spm_tok]
    llama3 = read(os.path.join(DATA, "tok", "tiny-llama3.json"))
    gpt2_tok = gpt2_tok_kvs(llama3)

    # gguf: the mutation corpus, tiny whole models of every architecture, the dtype file
    gdir = os.path.join(DATA, "fuzz", "gguf")
    for f in sorted(os.listdir(gdir)):
        put(out, "gguf", f, read(os.path.join(gdir, f)))
    put(out, "gguf", "types.gguf", dtype_gguf())
    put(out, "gguf", "tiny-llama.gguf", tiny_llama_gguf(spm40))
    put(out, "gguf", "tiny-llama-f16-gqa.gguf", tiny_llama_gguf(spm40, f16_layers=True, layers=2))
    put(out, "gguf", "tiny-mistral.gguf", tiny_llama_gguf(spm40, arch="mistral"))
    put(out, "gguf", "tiny-qwen2.gguf", tiny_llama_gguf(gpt2_tok, arch="qwen2"))
    put(out, "gguf", "tiny-qwen3.gguf", tiny_llama_gguf(gpt2_tok, arch="qwen3", extra=[("qwen3.attention.key_length", 4, 4)]))
    put(out, "gguf", "tiny-gemma3.gguf", tiny_llama_gguf(spm40, arch="gemma3", layers=2, extra=[
        ("gemma3.attention.sliding_window", 4, 4), ("gemma3.rope.scaling.type", 8, "linear"),
        ("gemma3.rope.scaling.factor", 6, 8.0), ("gemma3.attention.key_length", 4, 4)]))
    put(out, "gguf", "tiny-llama3-rope.gguf", tiny_llama_gguf(gpt2_tok, extra=[
        ("llama.rope.scaling.type", 8, "llama3"), ("llama.rope.scaling.factor", 6, 8.0),
        ("llama.rope.scaling.original_context_length", 4, 32)]))

    # gguf_tok: tokenizer metadata only (no tensors), SPM and gpt2 variants
    put(out, "gguf_tok", "spm.gguf", gguf_write([("general.architecture", 8, "llama")] + spm_tok, []))
    put(out, "gguf_tok", "gpt2.gguf", gguf_write([("general.architecture", 8, "llama")] + gpt2_tok, []))
    for pre in ("default", "gpt-2", "smollm", "qwen2", "llama3"):
        kv = [(k, t, pre if k == "tokenizer.ggml.pre" else v) for k, t, v in gpt2_tok]
        put(out, "gguf_tok", "gpt2-pre-%s.gguf" % pre, gguf_write(kv, []))
    put(out, "gguf_tok", "spm-40.gguf", gguf_write(spm40, []))
    nobyte = [(k, t, v) for k, t, v in spm_tok if k != "tokenizer.ggml.token_type"]
    put(out, "gguf_tok", "spm-no-types.gguf", gguf_write(nobyte, []))

    # safetensors: the micro model (fixtures/micro-llama/config.json), small files of every dtype
    fx = os.path.join(ROOT, "tests", "fuzz", "fixtures", "micro-llama")
    os.makedirs(fx, exist_ok=True)
    with open(os.path.join(fx, "config.json"), "w") as f:
        json.dump(MICRO_CFG, f, indent=1)
    micro = st_write(micro_tensors(), {"format": "pt"})
    put(out, "safetensors", "micro-llama.safetensors", micro)
    put(out, "safetensors", "f32.safetensors", st_write([("a", "F32", [2, 3], f32(6, 1)), ("b", "F32", [4], f32(4, 2))],
                                                        {"format": "pt"}))
    put(out, "safetensors", "f16-bf16.safetensors", st_write([("h", "F16", [2, 2], f16(4, 1)),
                                                              ("g", "BF16", [3], b"\x80\x3f" * 3),
                                                              ("e", "F32", [0], b"")]))
    put(out, "safetensors", "scalar.safetensors", st_write([("s", "F32", [], f32(1, 3)), ("x", "I64", [1], b"\0" * 8)]))
    put(out, "safetensors", "empty.safetensors", st_write([]))

    # st_index: the fixture shards of the micro model and indexes over them
    hdr, blob = st_read(micro)
    names = sorted(k for k in hdr if k != "__metadata__")
    half = len(names) // 2
    fx = os.path.join(ROOT, "tests", "fuzz", "fixtures", "st_index")
    os.makedirs(fx, exist_ok=True)
    wm = {}
    for i, part in enumerate((names[:half], names[half:])):
        fname = "model-%05d-of-00002.safetensors" % (i + 1)
        ts = []
        for n in part:
            a, b = hdr[n]["data_offsets"]
            ts.append((n, hdr[n]["dtype"], hdr[n]["shape"], blob[a:b]))
            wm[n] = fname
        with open(os.path.join(fx, fname), "wb") as f:
            f.write(st_write(ts, {"format": "pt"}))
    put(out, "st_index", "index.json", json.dumps({"metadata": {"total_size": len(blob)}, "weight_map": wm}, indent=2))
    one = {k: v for k, v in list(wm.items())[:3]}
    put(out, "st_index", "partial.json", json.dumps({"weight_map": one}))
    put(out, "st_index", "missing-shard.json", json.dumps({"weight_map": {names[0]: "model-00003-of-00002.safetensors"}}))
    put(out, "st_index", "wrong-shard.json", json.dumps({"weight_map": {names[0]: "model-00002-of-00002.safetensors"}}))
    put(out, "st_index", "slash.json", json.dumps({"weight_map": {names[0]: "../x.safetensors"}}))

    # config: every architecture
    for d in ("tiny-llama-untied", "tiny-qwen2", "tiny-qwen3", "tiny-gemma3"):
        put(out, "config", d + ".json", read(os.path.join(DATA, d, "config.json")))
    put(out, "config", "stories260K-hf.json", read(os.path.join(models, "stories260K-hf", "config.json")))
    c = json.loads(read(os.path.join(DATA, "tiny-llama-untied", "config.json")))
    c.update(architectures=["MistralForCausalLM"], model_type="mistral", sliding_window=16)
    put(out, "config", "mistral.json", json.dumps(c, indent=1))
    c = json.loads(read(os.path.join(DATA, "tiny-llama-untied", "config.json")))
    c.update(rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                           "original_max_position_embeddings": 64})
    put(out, "config", "llama3-rope.json", json.dumps(c))
    c.update(rope_scaling={"type": "linear", "factor": 2.0}, architectures=None)
    put(out, "config", "linear-rope.json", json.dumps(c))
    g = json.loads(read(os.path.join(DATA, "tiny-gemma3", "config.json")))
    g2 = {"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3", "text_config": g}
    put(out, "config", "gemma3-nested.json", json.dumps(g2))

    # tok_json: tokenizers as they are, and each followed by NUL + a text to encode
    st_tj = read(os.path.join(models, "stories260K-hf", "tokenizer.json"))
    put(out, "tok_json", "spm.json", st_tj)
    put(out, "tok_json", "llama3.json", llama3)
    put(out, "tok_json", "spm-text.json", st_tj + b"\0Once upon a time, \xc3\xa9\xf0\x9f\x98\x80 <s>\n\n  x")
    put(out, "tok_json", "llama3-text.json", llama3 + b"\0hello world <|mask|> it's 1234 \xe4\xb8\xad\r\n")
    j = json.loads(llama3)
    j["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"},
                                                            {"type": "Replace", "pattern": {"String": " "}, "content": "_"},
                                                            {"type": "Strip", "strip_left": True, "strip_right": True}]}
    put(out, "tok_json", "llama3-norm.json", json.dumps(j))
    j = json.loads(st_tj)
    j["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": True}
    j["normalizer"] = None
    put(out, "tok_json", "spm-metaspace.json", json.dumps(j))

    # tok_encode: byte 0 = tokenizer (bits 0-1) and mode (bits 2-3)
    texts = [b"Once upon a time there was a little girl.", b"hello world <|mask|> <|begin_of_text|>x",
             b"\xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80 caf\xc3\xa9\t\n\n  ", b"bad \xff\xfe utf8", b"<s></s><unk>",
             b"   leading and trailing   ", b"\x00\x01\x7f control"]
    for k in range(16):
        put(out, "tok_encode", "t%02d" % k, bytes([k]) + texts[k % len(texts)])

    # jsonl: text, JSONL text, JSONL prompt/completion, edge cases
    calib = read(os.path.join(ROOT, "data", "calib.txt"))[:600]
    put(out, "jsonl", "text.txt", calib)
    put(out, "jsonl", "text.jsonl", b'{"text": "Once upon a time"}\n\n{"text": "the end \\u00e9"}\n')
    put(out, "jsonl", "pc.jsonl", b'{"prompt": "Q: 2+2?", "completion": " 4"}\n{"prompt": "", "completion": "x y z w"}\n')
    put(out, "jsonl", "bom.jsonl", b'\xef\xbb\xbf{"text": "a b c d e f g h i j k l m n o p q r s t"}\r\n')
    put(out, "jsonl", "bad.jsonl", b'{"text": "ok"}\n{"prompt": 3}\n')
    put(out, "jsonl", "blank.txt", b" \n\t\n")

    # matrix: what layermap writes (CSV and JSON) and variants
    for f in ("hf.csv", "bf16.csv"):
        put(out, "matrix", f, read(os.path.join(DATA, "diff", f)))
    put(out, "matrix", "small.csv", "layer,attn.q,attn.k,attn.v,attn.o,mlp.up,mlp.down,mlp.gate\n"
                                    "0,1,2,3,4,5,6,nan\n1,-1,inf,-inf,0,1e-300,7,8\n")
    put(out, "matrix", "small.json", json.dumps({
        "model": "m", "method": "diff.rel", "norm": "none", "note": "x",
        "modules": ["attn.q", "attn.k", "attn.v", "attn.o", "mlp.up", "mlp.down", "mlp.gate"], "layers": 2,
        "values": [[1, 2, 3, 4, 5, 6, None], [0, 0, 0, 0, 0, 0, 1e999]],
        "layer_extra": {"name": "block influence", "values": [0.5, None]}}, indent=1).replace("Infinity", "1e999"))


if __name__ == "__main__":
    main()
