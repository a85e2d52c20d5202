#!/bin/sh
# bench_diff.sh -- throughput and memory of `layermap diff` on a multi-GB pair.
#
#   bench/bench_diff.sh            (from the repository root, after make)
#
# Environment:
#   BENCH_DIR   cache for the generated checkpoints (default bench/.cache/diff; about
#               2 x 2.2 GB, made once by bench/gen_synth_ckpt.py and reused)
#   PYTHON      a python with numpy (default: the venv of scripts/ref_venv.sh, made on first use)
#   LAYERMAP    the binary to time (default build/layermap)
#   GEN_ARGS    extra arguments for gen_synth_ckpt.py (a different shape)
#   RUNS        warm runs of -m rel, the best is reported (default 3)
#   RUNS_ALL    warm runs of -m all (default 1; 0 skips that case: on a pair larger
#               than the page cache each of its 6 passes reads both from disk)
#
# Measures: memory bandwidth (bench/membw.c: memcpy one thread, read all
# cores), then `layermap diff` warm (pages cached; a first run warms them) and
# cold (each shard evicted from the page cache with posix_fadvise DONTNEED, no
# root needed) for -m rel (one streaming pass: rel, density, cosine) and warm
# for -m all (adds the randomized SVD: 2 + 2 * power_iters passes, sgemm).
# GB/s counts the bytes of both checkpoints' module weights (what diff reads)
# over the whole command's wall time (model opening included); peak RSS comes
# from /usr/bin/time -v and is compared with the size of one checkpoint.
set -eu
# Let the CLI pick the best OpenBLAS core for this CPU (it re-executes itself
# with OPENBLAS_CORETYPE set); a value inherited from the environment would pin it.
unset OPENBLAS_CORETYPE

BENCH_DIR=${BENCH_DIR:-bench/.cache/diff}
LAYERMAP=${LAYERMAP:-build/layermap}
RUNS=${RUNS:-3}
RUNS_ALL=${RUNS_ALL:-1}
GEN_ARGS=${GEN_ARGS:-}
if [ -z "${PYTHON:-}" ]; then
    PYTHON=$(scripts/ref_venv.sh)
fi
here=$(dirname "$0")

[ -x "$LAYERMAP" ] || { echo "bench_diff: $LAYERMAP not built (run make)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench_diff: /usr/bin/time (GNU time) is needed for peak RSS" >&2; exit 1; }
mkdir -p "$BENCH_DIR"

# ---- checkpoints (cached: regenerated only when the arguments change) -------
stamp="$BENCH_DIR/args"
if [ ! -f "$BENCH_DIR/synth.json" ] || [ "$(cat "$stamp" 2>/dev/null)" != "gen $GEN_ARGS" ]; then
    echo "generating the synthetic pair in $BENCH_DIR ..."
    rm -rf "$BENCH_DIR/base" "$BENCH_DIR/ft" "$BENCH_DIR/synth.json"
    # shellcheck disable=SC2086
    "$PYTHON" "$here/gen_synth_ckpt.py" "$BENCH_DIR" $GEN_ARGS
    echo "gen $GEN_ARGS" > "$stamp"
fi
json() { "$PYTHON" -c "import json,sys; print(json.load(open('$BENCH_DIR/synth.json'))['$1'])"; }
module_bytes=$(json module_bytes)   # one checkpoint's 7 x layers module weights
ckpt_bytes=$(json checkpoint_bytes)
read_bytes=$((2 * module_bytes))     # what diff reads: both checkpoints' module weights

# ---- memory bandwidth ---------------------------------------------------------
cc -O2 -fopenmp -o "$BENCH_DIR/membw" "$here/membw.c"
"$BENCH_DIR/membw" 1024 > "$BENCH_DIR/membw.txt"
memcpy=$(awk '/^memcpy_GBps/ {print $2}' "$BENCH_DIR/membw.txt")
readbw=$(awk '/^read_GBps/ {print $2}' "$BENCH_DIR/membw.txt")

# ---- machine ------------------------------------------------------------------
cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
cores=$(getconf _NPROCESSORS_ONLN)
ram=$(awk '/^MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)

evict() { # drop every shard of both checkpoints from the page cache
    "$PYTHON" - "$BENCH_DIR" <<'EOF'
import os, sys, glob
for p in glob.glob(os.path.join(sys.argv[1], "*", "*.safetensors")):
    fd = os.open(p, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
EOF
}

# one_run METRIC -> "seconds peak_rss_kib cpu_seconds"
one_run() {
    # shellcheck disable=SC2086
    /usr/bin/time -v -o "$BENCH_DIR/time.txt" "$LAYERMAP" diff "$BENCH_DIR/base" "$BENCH_DIR/ft" -m $1 \
        --quiet --csv "$BENCH_DIR/out.csv" 2> "$BENCH_DIR/stderr.txt" > /dev/null ||
        { cat "$BENCH_DIR/stderr.txt" "$BENCH_DIR/time.txt" >&2; exit 1; }
    awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i]; w = s }
                /Maximum resident set size/ { r = $2 }
                /User time \(seconds\)|System time \(seconds\)/ { c += $2 }
                END { printf "%.3f %d %.2f\n", w, r, c }' "$BENCH_DIR/time.txt"
}

# best of $2 warm runs -> "seconds peak_rss_kib cpu_seconds" (of the best run)
warm() {
    one_run "$1" > /dev/null
    best=""
    i=0
    while [ "$i" -lt "$2" ]; do
        r=$(one_run "$1")
        if [ -z "$best" ] || awk -v a="${r%% *}" -v b="${best%% *}" 'BEGIN { exit !(a < b) }'; then best=$r; fi
        i=$((i + 1))
    done
    echo "$best"
}

cold() {
    evict
    one_run "$1"
}

row() { # case "seconds rss_kib cpu_seconds"
    echo "$2" | awk -v c="$1" -v mb="$read_bytes" -v cb="$ckpt_bytes" -v mc="$memcpy" -v rd="$readbw" '{
        s = $1; r = $2; gbs = mb / s / 1e9
        printf "| %s | %.2f | %.2f | %.2f | %.0f%% | %.0f%% | %.0f MiB | %.1f%% |\n", c, s, $3, gbs, 100 * gbs / mc,
               100 * gbs / rd, r / 1024, 100 * r * 1024 / cb
    }'
}

echo
echo "machine: $cpu, $cores cores, $ram RAM; memcpy $memcpy GB/s (1 thread), read $readbw GB/s ($cores threads)"
echo "pair: 2 x $(awk -v b="$ckpt_bytes" 'BEGIN { printf "%.2f GB", b / 1e9 }') bf16 in $(json shards) shards" \
     "($(json layers) layers, dim $(json dim), ffn $(json ffn)); module weights read (both): $(awk -v b="$read_bytes" 'BEGIN { printf "%.2f GB", b / 1e9 }')"
echo "BLAS: $("$LAYERMAP" --version | tail -n 1)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| case | wall s | CPU s | GB/s | vs memcpy | vs read | peak RSS | RSS / checkpoint |"
echo "|---|---|---|---|---|---|---|---|"
r=$(cold rel); row "rel, cold cache" "$r"
r=$(warm rel "$RUNS"); row "rel, warm cache" "$r"
r=$(warm "rel --threads 1" "$RUNS"); row "rel, warm, 1 thread" "$r"
if [ "$RUNS_ALL" -gt 0 ]; then r=$(warm all "$RUNS_ALL"); row "all (rank k=64, 2 power iters), warm" "$r"; fi

# disk yardstick: read both checkpoints' files sequentially, cold
evict
t0=$(date +%s.%N)
cat "$BENCH_DIR"/base/*.safetensors "$BENCH_DIR"/ft/*.safetensors > /dev/null
t1=$(date +%s.%N)
awk -v a="$t0" -v b="$t1" -v n="$ckpt_bytes" 'BEGIN {
    printf "\ndisk: cat of both checkpoints (%.2f GB), cold: %.2f s, %.2f GB/s\n", 2 * n / 1e9, b - a, 2 * n / 1e9 / (b - a) }'
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
