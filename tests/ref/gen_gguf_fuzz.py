#!/usr/bin/env python3
"""Write tests/data/fuzz/gguf/: a small GGUF written by gguf-py (llama.cpp's
own writer, so the corpus does not share the C test's builder) and targeted
or random mutations of it. test_gguf.c replays every file: each must open or
fail with LM_ECORRUPT / LM_EUNSUPPORTED, never crash, overrun or leak.

Usage:  $(scripts/ref_venv.sh) tests/ref/gen_gguf_fuzz.py [outdir]
The output is deterministic (fixed seed); every file is under 2 KB.
"""
import os
import random
import struct
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T


def base_file(path):
    w = gguf.GGUFWriter(path, "llama")
    w.add_custom_alignment(32)
    w.add_uint32("llama.block_count", 1)
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_bool("tokenizer.ggml.add_bos_token", True)
    w.add_token_list(["<unk>", "<s>", "</s>", "\u2581the"])
    w.add_token_scores([0.0, 0.0, 0.0, -1.5])
    w.add_array("layermap.ints", [1, -2, 3])
    rng = np.random.default_rng(7)
    w.add_tensor("norm.weight", rng.standard_normal(32).astype(np.float32))
    q = gguf.quants.quantize(rng.standard_normal((2, 64)).astype(np.float32), T.Q8_0)
    w.add_tensor("w.weight", q, raw_dtype=T.Q8_0)
    w.add_tensor("h.weight", rng.standard_normal((2, 16)).astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def walk(b):
    """Offsets of the fields of a valid GGUF: {'kv': [...], 'ti': [...]}."""
    off = 8
    n_t, n_kv = struct.unpack_from("<QQ", b, off)
    off += 16
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    kvs, tis = [], []
    for _ in range(n_kv):
        kv = {"key_len": off}
        (n,) = struct.unpack_from("<Q", b, off)
        kv["key"] = b[off + 8:off + 8 + n].decode()
        off += 8 + n
        kv["type"] = off
        (t,) = struct.unpack_from("<I", b, off)
        off += 4
        if t == 9:
            (et,) = struct.unpack_from("<I", b, off)
            kv["arr_type"] = off
            kv["count"] = off + 4
            (cnt,) = struct.unpack_from("<Q", b, off + 4)
            off += 12
            kv["elems"] = []
            for _ in range(cnt):
                kv["elems"].append(off)
                if et == 8:
                    (n,) = struct.unpack_from("<Q", b, off)
                    off += 8 + n
                else:
                    off += sizes[et]
        elif t == 8:
            kv["value"] = off
            (n,) = struct.unpack_from("<Q", b, off)
            off += 8 + n
        else:
            kv["value"] = off
            off += sizes[t]
        kvs.append(kv)
    for _ in range(n_t):
        ti = {"name_len": off}
        (n,) = struct.unpack_from("<Q", b, off)
        ti["name"] = b[off + 8:off + 8 + n].decode()
        off += 8 + n
        ti["n_dims"] = off
        (nd,) = struct.unpack_from("<I", b, off)
        off += 4
        ti["ne"] = off
        off += 8 * nd
        ti["type"] = off
        off += 4
        ti["offset"] = off
        off += 8
        tis.append(ti)
    return {"kv": {k["key"]: k for k in kvs}, "ti": tis, "end": off}


def put(b, off, fmt, v):
    b = bytearray(b)
    struct.pack_into(fmt, b, off, v)
    return bytes(b)


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "data", "fuzz", "gguf")
    os.makedirs(outdir, exist_ok=True)
    for f in os.listdir(outdir):
        if f.endswith(".gguf"):
            os.remove(os.path.join(outdir, f))
    tmp = os.path.join(outdir, "base.gguf")
    base_file(tmp)
    b = open(tmp, "rb").read()
    m = walk(b)
    kv, ti = m["kv"], m["ti"]
    toks = kv["tokenizer.ggml.tokens"]
    files = {
        "base.gguf": b,  # valid
        "empty.gguf": b"",
        "magic-only.gguf": b"GGUF",
        "zeros.gguf": bytes(64),
        "trunc-header.gguf": b[:20],
        "trunc-in-tokens.gguf": b[:toks["elems"][2] + 5],
        "trunc-in-infos.gguf": b[:ti[1]["ne"] + 3],
        "trunc-last-byte.gguf": b[:-1],
        "version-1.gguf": put(b, 4, "<I", 1),
        "version-be.gguf": put(b, 4, "<I", 0x03000000),
        "n-tensors-plus-1.gguf": put(b, 8, "<Q", len(ti) + 1),
        "n-kv-minus-1.gguf": put(b, 16, "<Q", len(kv) - 1),
        "n-kv-huge.gguf": put(b, 16, "<Q", 1 << 62),
        "key-len-huge.gguf": put(b, kv["general.architecture"]["key_len"], "<Q", 1 << 63),
        "tokens-count-huge.gguf": put(b, toks["count"], "<Q", (1 << 64) - 1),
        "token-len-huge.gguf": put(b, toks["elems"][3], "<Q", 1 << 40),
        "token-len-to-eof.gguf": put(b, toks["elems"][3], "<Q", len(b) - toks["elems"][3] - 8),
        "array-of-arrays.gguf": put(b, kv["layermap.ints"]["arr_type"], "<I", 9),
        "value-type-junk.gguf": put(b, kv["llama.block_count"]["type"], "<I", 0x41414141),
        "alignment-3.gguf": put(b, kv["general.alignment"]["value"], "<I", 3),
        "alignment-0.gguf": put(b, kv["general.alignment"]["value"], "<I", 0),
        "ndims-7.gguf": put(b, ti[0]["n_dims"], "<I", 7),
        "ne-odd.gguf": put(b, ti[1]["ne"], "<Q", 63),
        "ne-huge.gguf": put(b, ti[2]["ne"] + 8, "<Q", 1 << 62),
        "type-junk.gguf": put(b, ti[1]["type"], "<I", 0xFFFF),
        "type-iq2xxs.gguf": put(b, ti[1]["type"], "<I", 16),
        "offset-misaligned.gguf": put(b, ti[2]["offset"], "<Q", 8),
        "offset-overlap.gguf": put(b, ti[2]["offset"], "<Q", 0),
        "offset-past-end.gguf": put(b, ti[2]["offset"], "<Q", 1 << 20),
        "offset-wraps.gguf": put(b, ti[2]["offset"], "<Q", (1 << 64) - 32),
        "name-dup.gguf": put(b, ti[1]["name_len"] + 8, "<8s", ti[2]["name"].encode()[:8]),
    }
    rng = random.Random(1234)
    for i in range(8):  # random byte mutations
        x = bytearray(b)
        for _ in range(rng.randint(1, 6)):
            x[rng.randrange(len(x))] = rng.randrange(256)
        files[f"random-{i}.gguf"] = bytes(x)
    for name, data in files.items():
        with open(os.path.join(outdir, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(files)} files to {outdir} ({sum(len(d) for d in files.values())} bytes)")


if __name__ == "__main__":
    main()
