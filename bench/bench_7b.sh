#!/bin/sh
# bench_7b.sh -- "a 7B model attributes on a 24 GB machine": peak memory and
# speed of `layermap attribute` (grad-weight) and `layermap ppl` on a
# synthetic Llama-2-7B-shaped BF16 checkpoint.
#
#   bench/bench_7b.sh            (from the repository root, after make)
#
# Environment:
#   BENCH_DIR   cache (default bench/.cache/7b): the generated checkpoint (13.5 GB,
#               made once in about 100 s, reused) and every log
#   PYTHON      a python with numpy (default: the venv of scripts/ref_venv.sh, made on first use)
#   LAYERMAP    the binary to time (default build/layermap)
#   MODELS      the shared test models (default ../shared/models): the tokenizer
#               is copied from $MODELS/stories260K-hf
#   SEQS        sequence lengths to run, one sequence each (default "128 512")
#   COLD        1 (default) also times attribute at the first SEQS value with the
#               checkpoint evicted from the page cache; 0 skips it
#   ACT_CACHE   MB: also times attribute at the last SEQS value with --act-cache
#               ACT_CACHE (default 8192: every layer's intermediates kept, no
#               recompute in the backward; the default 256 MB keeps none at seq
#               512, where one layer's are ~190 MB); 0 skips it
#   COMPUTE     --compute values for attribute and ppl at every SEQS value (default "f32";
#               e.g. "f32 bf16": one row each, the bf16 CSV compared with the f32 one)
#   PACK        N > 0: also N sequences of PACK_SEQ tokens (default 128) attributed
#               with --batch 1 and with --batch N (packing: the weights of each layer
#               dequantized once per N sequences), the CSVs compared; 0 (default) skips
#
# The checkpoint: Llama-2-7B's shape (dim 4096, ffn 11008, 32 layers, 32 heads,
# 32 kv heads, vocab 32000, untied head), weights N(0, 0.02^2) stored as BF16
# (the top 16 bits of the float32), norms 1.0, in 3 shards with
# model.safetensors.index.json. The tokenizer is stories260K's Llama-2-style
# tokenizer.json (512 tokens; its ids are valid for a 32000 vocab): the text is
# only a source of token ids here, the weights are random, the loss is ~ln(32000)
# or worse. (bench/gen_synth_ckpt.py is not reused: it always writes a base and a
# fine-tuned copy, 27 GB for this shape, with bit-pattern weights, not normal ones.)
#
# Each case is one process under /usr/bin/time -v, run with OPENBLAS_CORETYPE
# unset so layermap picks its BLAS core itself, as for a user. Wall time is the
# whole command (model open, tokenization, writing the CSV); tokens/s is the
# tokens over that wall time, and layermap's own figure (the passes only) is
# shown beside it. Peak RSS is the maximum resident set size (anonymous memory
# plus the mapped file pages still resident); disk read is time's "file system
# inputs" (the page cache cannot hold the whole checkpoint next to the run, so
# a second run still reads part of it). The attribute CSV must have 32 rows
# of 7 finite values. Nothing is asserted about speed.
set -eu

BENCH_DIR=${BENCH_DIR:-bench/.cache/7b}
LAYERMAP=${LAYERMAP:-build/layermap}
MODELS=${MODELS:-../shared/models}
SEQS=${SEQS:-128 512}
COLD=${COLD:-1}
ACT_CACHE=${ACT_CACHE:-8192}
COMPUTE=${COMPUTE:-f32}
PACK=${PACK:-0}
PACK_SEQ=${PACK_SEQ:-128}
DATA=data/calib.txt
if [ -z "${PYTHON:-}" ]; then
    PYTHON=$(scripts/ref_venv.sh)
fi
CKPT=$BENCH_DIR/model
GEN_VERSION="7b-v1 seed 7 std 0.02 shard-gb 5"

[ -x "$LAYERMAP" ] || { echo "bench_7b: $LAYERMAP not built (run make)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench_7b: /usr/bin/time (GNU time) is needed for peak RSS (apt-get install time)" >&2; exit 1; }
[ -f "$MODELS/stories260K-hf/tokenizer.json" ] || { echo "bench_7b: no $MODELS/stories260K-hf/tokenizer.json (set MODELS)" >&2; exit 1; }
[ -f "$DATA" ] || { echo "bench_7b: no $DATA (run from the repository root)" >&2; exit 1; }
mkdir -p "$BENCH_DIR"

# ---- checkpoint (cached) --------------------------------------------------------
if [ ! -f "$CKPT/synth.json" ] || [ "$(cat "$CKPT/args" 2>/dev/null)" != "$GEN_VERSION" ]; then
    rm -rf "$CKPT" "$CKPT.tmp"
    free_kb=$(df -Pk "$BENCH_DIR" | awk 'NR == 2 {print $4}')
    [ "$free_kb" -gt $((16 * 1024 * 1024)) ] ||
        { echo "bench_7b: need 16 GB free under $BENCH_DIR for the 13.5 GB checkpoint" >&2; exit 1; }
    echo "generating the 7B-shaped checkpoint in $CKPT (13.5 GB) ..."
    mkdir -p "$CKPT.tmp"
    "$PYTHON" - "$CKPT.tmp" <<'EOF'
import json, os, sys, time
import numpy as np

out = sys.argv[1]
DIM, FFN, NL, NH, NKV, VOCAB, STD, SEED, SHARD = 4096, 11008, 32, 32, 32, 32000, 0.02, 7, 5 * 10**9
HD = DIM // NH
t = [("model.embed_tokens.weight", (VOCAB, DIM))]
for i in range(NL):
    p = f"model.layers.{i}."
    t += [(p + "input_layernorm.weight", (DIM,)),
          (p + "self_attn.q_proj.weight", (NH * HD, DIM)), (p + "self_attn.k_proj.weight", (NKV * HD, DIM)),
          (p + "self_attn.v_proj.weight", (NKV * HD, DIM)), (p + "self_attn.o_proj.weight", (DIM, NH * HD)),
          (p + "post_attention_layernorm.weight", (DIM,)),
          (p + "mlp.gate_proj.weight", (FFN, DIM)), (p + "mlp.up_proj.weight", (FFN, DIM)),
          (p + "mlp.down_proj.weight", (DIM, FFN))]
t += [("model.norm.weight", (DIM,)), ("lm_head.weight", (VOCAB, DIM))]

nbytes = lambda s: 2 * int(np.prod(s))
shards, cur, size = [], [], 0
for name, shape in t:
    if cur and size + nbytes(shape) > SHARD:
        shards.append(cur)
        cur, size = [], 0
    cur.append((name, shape))
    size += nbytes(shape)
shards.append(cur)
files = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
total = sum(nbytes(s) for _, s in t)

cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": DIM,
       "intermediate_size": FFN, "num_hidden_layers": NL, "num_attention_heads": NH,
       "num_key_value_heads": NKV, "head_dim": HD, "vocab_size": VOCAB, "max_position_embeddings": 4096,
       "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu", "attention_bias": False,
       "mlp_bias": False, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
       "pad_token_id": 0, "initializer_range": STD, "torch_dtype": "bfloat16"}
json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=1)
json.dump({"metadata": {"total_size": total},
           "weight_map": {n: files[i] for i, sh in enumerate(shards) for n, _ in sh}},
          open(os.path.join(out, "model.safetensors.index.json"), "w"), indent=1)

rng = np.random.default_rng(SEED)
CHUNK = 1 << 24  # floats generated at a time (64 MiB)
t0 = time.time()
for i, sh in enumerate(shards):
    h, off = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in sh:
        h[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + nbytes(shape)]}
        off += nbytes(shape)
    j = json.dumps(h, separators=(",", ":")).encode()
    j += b" " * (-len(j) % 8)
    with open(os.path.join(out, files[i]), "wb") as f:
        f.write(len(j).to_bytes(8, "little") + j)
        for name, shape in sh:
            n = int(np.prod(shape))
            if len(shape) == 1:
                f.write(np.full(n, 0x3F80, dtype=np.uint16).tobytes())  # norms: 1.0
                continue
            for k in range(0, n, CHUNK):
                x = rng.standard_normal(min(CHUNK, n - k), dtype=np.float32)
                x *= np.float32(STD)
                f.write((x.view(np.uint32) >> 16).astype(np.uint16).tobytes())  # bf16 = top 16 bits
        f.flush()
        os.fsync(f.fileno())
    print(f"  shard {i + 1}/{len(shards)}: {off / 1e9:.2f} GB ({time.time() - t0:.0f} s)", flush=True)
params = total // 2
layer_params = sum(int(np.prod(s)) for n, s in t if ".layers." in n)
info = {"shards": len(shards), "checkpoint_bytes": total, "params": params, "layer_params": layer_params,
        "f32_bytes": 4 * params, "seed": SEED, "std": STD, "seconds": round(time.time() - t0, 1)}
json.dump(info, open(os.path.join(out, "synth.json"), "w"), indent=1)
print(json.dumps(info))
EOF
    cp "$MODELS/stories260K-hf/tokenizer.json" "$CKPT.tmp/"
    [ ! -f "$MODELS/stories260K-hf/tokenizer_config.json" ] || cp "$MODELS/stories260K-hf/tokenizer_config.json" "$CKPT.tmp/"
    echo "$GEN_VERSION" > "$CKPT.tmp/args"
    mv "$CKPT.tmp" "$CKPT"
fi
json() { "$PYTHON" -c "import json; print(json.load(open('$CKPT/synth.json'))['$1'])"; }
ckpt_bytes=$(json checkpoint_bytes)
f32_bytes=$(json f32_bytes)
disk_bytes=$(du -cb "$CKPT"/*.safetensors | awk 'END {print $1}')

# ---- machine ------------------------------------------------------------------
cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
cores=$(nproc)
ram=$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)

evict() { # drop the shards from the page cache (no root needed)
    "$PYTHON" - "$CKPT" <<'EOF'
import glob, os, sys
for p in glob.glob(os.path.join(sys.argv[1], "*.safetensors")):
    fd = os.open(p, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
EOF
}

# timed NAME CMD... : runs CMD under time -v, logs in $BENCH_DIR/NAME.{log,time}
# -> "wall_s peak_rss_kib cpu_s disk_read_bytes"
timed() {
    name=$1
    shift
    env -u OPENBLAS_CORETYPE /usr/bin/time -v -o "$BENCH_DIR/$name.time" "$@" \
        > "$BENCH_DIR/$name.out" 2> "$BENCH_DIR/$name.log" ||
        { echo "bench_7b: failed: $*" >&2; cat "$BENCH_DIR/$name.log" "$BENCH_DIR/$name.time" >&2; exit 1; }
    awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i]; w = s }
                /Maximum resident set size/ { r = $2 }
                /User time \(seconds\)|System time \(seconds\)/ { c += $2 }
                /File system inputs/ { io = $2 * 512 }
                END { printf "%.2f %d %.1f %.0f\n", w, r, c, io }' "$BENCH_DIR/$name.time"
}

# the 32 x 7 matrix: every value finite
check_csv() {
    "$PYTHON" - "$1" <<'EOF' || { echo "bench_7b: bad CSV $1" >&2; exit 1; }
import csv, math, sys
rows = list(csv.reader(open(sys.argv[1])))
head, body = rows[0], rows[1:]
assert len(head) == 8 and len(body) == 32, (head, len(body))
vals = [float(v) for r in body for v in r[1:]]
assert len(vals) == 32 * 7 and all(math.isfinite(v) for v in vals), "non-finite value"
print(f"csv ok: 32 x 7 finite, min {min(vals):.4g}, max {max(vals):.4g}")
EOF
}

# csvcmp A.csv B.csv: bit-identical, or the largest difference relative to the largest cell
# of A and the Spearman rank correlation over the cells (`layermap compare`)
csvcmp() {
    d=$("$PYTHON" - "$1" "$2" <<'EOF'
import csv, sys
a, b = ([float(v) for r in list(csv.reader(open(p)))[1:] for v in r[1:]] for p in sys.argv[1:3])
print("bit-identical" if a == b else f"{max(abs(x - y) for x, y in zip(a, b)) / max(map(abs, a)):.2e}")
EOF
    ) || return 1
    [ "$d" = bit-identical ] && { echo "$d"; return 0; }
    echo "max |diff| / max |cell| $d, Spearman $("$LAYERMAP" compare "$1" "$2" | awk 'NR == 2 { print $4 }')"
}

# row CASE "wall rss cpu io" NTOKENS LOGFILE
row() {
    own=$(grep -o '[0-9.]* tokens/s' "$4" | tail -n 1 | cut -d' ' -f1)
    echo "$2" | awk -v c="$1" -v n="$3" -v own="${own:-?}" '{
        printf "| %s | %d | %.1f | %.1f | %.1f | %.2f | %.1f | %.2f | %s |\n", c, n, $1, $3, $4 / 1e9, $2 / 1048576,
               $2 * 1024 / 1e9, n / $1, own }'
}

ntok() { # tokens used by a run: from layermap's own summary
    case $1 in
    *attr*|pack*) sed -n 's/.*grad-weight: \([0-9]*\) tokens.*/\1/p' "$BENCH_DIR/$1.log" | tail -n 1 ;;
    *) awk '/^tokens/ {print $2}' "$BENCH_DIR/$1.out" ;;
    esac
}

echo
echo "machine: $cpu, $cores cores, $ram RAM; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "layermap: $(env -u OPENBLAS_CORETYPE "$LAYERMAP" --version | tr '\n' ';' | sed 's/;$//')"
awk -v d="$disk_bytes" -v c="$ckpt_bytes" -v f="$f32_bytes" -v s="$(json shards)" -v p="$(json params)" 'BEGIN {
    printf "checkpoint: %.2f B params, BF16 on disk %.2f GB (%.2f GiB) in %d shards; as F32 it would take %.2f GB (%.2f GiB)\n",
           p / 1e9, d / 1e9, d / 2^30, s, f / 1e9, f / 2^30 }'
echo

results=$BENCH_DIR/results.md
{
    echo "| case | tokens | wall s | CPU s | disk read GB | peak RSS GiB | peak RSS GB | tokens/s (wall) | tokens/s (layermap) |"
    echo "|---|---|---|---|---|---|---|---|---|"
} > "$results"
first=1
for s in $SEQS; do
    if [ "$first" = 1 ] && [ "$COLD" = 1 ]; then
        evict
        r=$(timed "attr$s.cold" "$LAYERMAP" attribute "$CKPT" --data "$DATA" --seq-len "$s" --max-tokens "$s" \
            -m grad-weight -q --csv "$BENCH_DIR/attr$s.cold.csv")
        check_csv "$BENCH_DIR/attr$s.cold.csv"
        row "attribute grad-weight, seq $s, cold page cache" "$r" "$(ntok "attr$s.cold")" "$BENCH_DIR/attr$s.cold.log" >> "$results"
    fi
    first=0
    for c in $COMPUTE; do
        sfx=; [ "$c" = f32 ] || sfx=.$c
        r=$(timed "attr$s$sfx" "$LAYERMAP" attribute "$CKPT" --data "$DATA" --seq-len "$s" --max-tokens "$s" \
            -m grad-weight -q --compute "$c" --csv "$BENCH_DIR/attr$s$sfx.csv")
        check_csv "$BENCH_DIR/attr$s$sfx.csv"
        row "attribute grad-weight, seq $s, --compute $c" "$r" "$(ntok "attr$s$sfx")" "$BENCH_DIR/attr$s$sfx.log" >> "$results"
        r=$(timed "ppl$s$sfx" "$LAYERMAP" ppl "$CKPT" "$DATA" --seq-len "$s" --max-tokens "$s" --compute "$c")
        row "ppl (forward only), seq $s, --compute $c" "$r" "$(ntok "ppl$s$sfx")" "$BENCH_DIR/ppl$s$sfx.log" >> "$results"
        echo "seq $s, --compute $c: attribute $(grep -o 'loss [0-9.]*/token' "$BENCH_DIR/attr$s$sfx.log" | tail -n 1);" \
             "ppl $(sed -n 's/^nll.token *//p' "$BENCH_DIR/ppl$s$sfx.out")/token"
        if [ -n "$sfx" ] && [ -f "$BENCH_DIR/attr$s.csv" ]; then
            echo "seq $s: CSV with --compute $c vs f32: $(csvcmp "$BENCH_DIR/attr$s.csv" "$BENCH_DIR/attr$s$sfx.csv")"
        fi
    done
    last=$s
done
if [ "$ACT_CACHE" != 0 ] && [ -n "${last:-}" ]; then
    s=$last
    r=$(timed "attr$s.act$ACT_CACHE" "$LAYERMAP" attribute "$CKPT" --data "$DATA" --seq-len "$s" --max-tokens "$s" \
        -m grad-weight -q --act-cache "$ACT_CACHE" --csv "$BENCH_DIR/attr$s.act.csv")
    check_csv "$BENCH_DIR/attr$s.act.csv"
    cmpres=$(csvcmp "$BENCH_DIR/attr$s.csv" "$BENCH_DIR/attr$s.act.csv")
    echo "seq $s: CSV with --act-cache $ACT_CACHE vs the default (recompute): $cmpres"
    row "attribute grad-weight, seq $s, --act-cache $ACT_CACHE" "$r" "$(ntok "attr$s.act$ACT_CACHE")" \
        "$BENCH_DIR/attr$s.act$ACT_CACHE.log" >> "$results"
fi
if [ "$PACK" -gt 0 ]; then
    s=$PACK_SEQ
    n=$((PACK * PACK_SEQ))
    for b in 1 "$PACK"; do
        r=$(timed "pack$s.b$b" "$LAYERMAP" attribute "$CKPT" --data "$DATA" --seq-len "$s" --max-tokens "$n" \
            --batch "$b" -m grad-weight -q --csv "$BENCH_DIR/pack$s.b$b.csv")
        check_csv "$BENCH_DIR/pack$s.b$b.csv"
        row "attribute grad-weight, $PACK sequences of $s, --batch $b" "$r" "$(ntok "pack$s.b$b")" \
            "$BENCH_DIR/pack$s.b$b.log" >> "$results"
    done
    echo "$PACK x seq $s: CSV with --batch $PACK vs --batch 1: $(csvcmp "$BENCH_DIR/pack$s.b1.csv" "$BENCH_DIR/pack$s.b$PACK.csv")"
fi
echo
cat "$results"
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
