#!/bin/sh
# bench_mpi.sh -- data parallelism over MPI ranks: `attribute -m grad-weight`
# on SmolLM2-135M (Q4_1), sequences of 256 tokens, N tokens of data/calib.txt,
# one rank of one thread against two ranks of one thread each (mpirun -np 1 /
# -np 2 of build-mpi/layermap, --bind-to core: one core each), alternating,
# best of RUNS. Reports the CLI's own time of the attribution (tokens/s, after
# loading) and the wall time of the whole mpirun (start-up and loading
# included), the speed-up and the parallel efficiency (speed-up / 2), and the
# two ranks' matrix against the one rank's (tests/cli/mpi_cmp.py: within 1e-9).
#
#   bench/bench_mpi.sh [N_TOKENS]     default 2048
#
# Environment: MODEL (default $LAYERMAP_CACHE/SmolLM2-135M-Instruct.Q4_1.gguf),
# DATA (data/calib.txt), RUNS (3), LAYERMAP (build-mpi/layermap: make MPI=1),
# OUTDIR (bench/.cache/mpi).
set -eu
cd "$(dirname "$0")/.."
N=${1:-2048}
CACHE=${LAYERMAP_CACHE:-$HOME/.cache/layermap}
MODEL=${MODEL:-$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf}
DATA=${DATA:-data/calib.txt}
RUNS=${RUNS:-3}
LM=${LAYERMAP:-build-mpi/layermap}
OUTDIR=${OUTDIR:-bench/.cache/mpi}
mkdir -p "$OUTDIR"
die() { echo "bench_mpi: $*" >&2; exit 1; }
command -v mpirun >/dev/null 2>&1 || die "no mpirun (scripts/deps.sh mpi)"
[ -x "$LM" ] || die "$LM: not built (make MPI=1)"
[ -f "$MODEL" ] || die "$MODEL: not found (scripts/fetch_models.sh)"
OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 LM_PROGRESS=0
export OMPI_ALLOW_RUN_AS_ROOT OMPI_ALLOW_RUN_AS_ROOT_CONFIRM OMP_NUM_THREADS LM_PROGRESS

# run NP: one mpirun; its log in $OUTDIR/np$NP.$r.log, its wall seconds in $OUTDIR/np$NP.$r.wall
run() {
    t0=$(date +%s.%N)
    env -u OPENBLAS_CORETYPE mpirun --bind-to core -np "$1" "$LM" attribute "$MODEL" --data "$DATA" -m grad-weight \
        --seq-len 256 --max-tokens "$N" --threads 1 --json "$OUTDIR/np$1.json" -q 2>"$OUTDIR/np$1.$r.log" ||
        { cat "$OUTDIR/np$1.$r.log" >&2; die "-np $1 failed"; }
    t1=$(date +%s.%N)
    echo "$t0 $t1" | awk '{ printf "%.2f\n", $2 - $1 }' >"$OUTDIR/np$1.$r.wall"
}
# seconds the CLI reports for the attribution
secs() { sed -n 's/.* \([0-9.]*\) s, \([0-9.]*\) tokens\/s$/\1/p' "$1" | head -1; }

r=1
while [ "$r" -le "$RUNS" ]; do
    run 1
    run 2
    r=$((r + 1))
done
best() { # best (lowest) of FILE-SUFFIX over the runs: "best (all...)"
    all=""
    r=1
    while [ "$r" -le "$RUNS" ]; do
        case "$2" in
        log) s=$(secs "$OUTDIR/$1.$r.log") ;;
        *) s=$(cat "$OUTDIR/$1.$r.wall") ;;
        esac
        all="$all $s"
        r=$((r + 1))
    done
    echo "$all" | awk '{ b = $1; for (i = 2; i <= NF; i++) if ($i < b) b = $i; printf "%s (%s)\n", b, substr($0, 2) }'
}
c1=$(best np1 log) c2=$(best np2 log) w1=$(best np1 wall) w2=$(best np2 wall)
python3 tests/cli/mpi_cmp.py "$OUTDIR/np1.json" "$OUTDIR/np2.json" 2 >"$OUTDIR/cmp.log" 2>&1 && same=yes || same=no
echo "bench_mpi: SmolLM2-135M Q4_1 grad-weight, $N tokens in sequences of 256, 1 thread per rank"
echo "  1 rank : attribution ${c1%% *} s ($(echo "$N ${c1%% *}" | awk '{ printf "%.1f", $1 / $2 }') tok/s), mpirun wall ${w1%% *} s   all runs: ${c1#* } / ${w1#* }"
echo "  2 ranks: attribution ${c2%% *} s ($(echo "$N ${c2%% *}" | awk '{ printf "%.1f", $1 / $2 }') tok/s), mpirun wall ${w2%% *} s   all runs: ${c2#* } / ${w2#* }"
s1=${c1%% *} s2=${c2%% *} v1=${w1%% *} v2=${w2%% *}
awk -v a="$s1" -v b="$s2" -v c="$v1" -v d="$v2" 'BEGIN {
    printf "  speed-up %.2fx (parallel efficiency %.0f%%) in the attribution, %.2fx (%.0f%%) wall\n",
        a / b, 50 * a / b, c / d, 50 * c / d }'
echo "  2-rank matrix equal to 1-rank within 1e-9: $same ($(tail -1 "$OUTDIR/cmp.log"))"
echo "  load while running: $(cut -d' ' -f1-3 /proc/loadavg) (2 cores; other jobs share them)"
