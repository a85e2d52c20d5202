#!/bin/sh
# bench_many.sh -- several methods from one pass: `attribute -m grad-weight`
# against `-m grad-weight,fisher,grad-norm,act-grad` on SmolLM2-135M (Q4_1),
# sequences of 512 tokens, 2048 tokens of data/calib.txt, in the same run
# (alternating, best of RUNS), and the matrices of the set against separate
# runs (identical bytes expected). With OLD="path/to/old/layermap ..." each
# old binary's grad-weight run is timed alongside (the CPU backend
# before/after), in the same loop.
#
#   bench/bench_many.sh [N_TOKENS]     default 2048
#
# Environment: MODEL (default $LAYERMAP_CACHE/SmolLM2-135M-Instruct.Q4_1.gguf),
# DATA (data/calib.txt), THREADS (2), RUNS (3), LAYERMAP (build/layermap),
# OLD (unset), OUTDIR (bench/.cache/many).
set -eu
cd "$(dirname "$0")/.."
N=${1:-2048}
CACHE=${LAYERMAP_CACHE:-$HOME/.cache/layermap}
MODEL=${MODEL:-$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf}
DATA=${DATA:-data/calib.txt}
THREADS=${THREADS:-2}
RUNS=${RUNS:-3}
LM=${LAYERMAP:-build/layermap}
OUTDIR=${OUTDIR:-bench/.cache/many}
SET=grad-weight,fisher,grad-norm,act-grad
mkdir -p "$OUTDIR"
die() { echo "bench_many: $*" >&2; exit 1; }
[ -x "$LM" ] || die "$LM: not built (make)"
[ -f "$MODEL" ] || die "$MODEL: not found (scripts/fetch_models.sh)"
for b in ${OLD:-}; do [ -x "$b" ] || die "$b: not an executable"; done

# run TAG BIN METHODS OUT: one attribute run; its log in $OUTDIR/TAG.$r.log
run() {
    env -u OPENBLAS_CORETYPE "$2" attribute "$MODEL" --data "$DATA" -m "$3" --seq-len 512 --max-tokens "$N" \
        --threads "$THREADS" --csv "$4" -q 2>"$OUTDIR/$1.$r.log" || { cat "$OUTDIR/$1.$r.log" >&2; die "$1 failed"; }
}
# seconds and tok/s the CLI reports for the first method of a log
secs() { sed -n 's/.* \([0-9.]*\) s, \([0-9.]*\) tokens\/s$/\1/p' "$1" | head -1; }

r=1
while [ "$r" -le "$RUNS" ]; do
    run one "$LM" grad-weight "$OUTDIR/one.csv"
    run set "$LM" "$SET" "$OUTDIR/set-{method}.csv"
    k=0
    for b in ${OLD:-}; do k=$((k + 1)); run "old$k" "$b" grad-weight "$OUTDIR/old$k.csv"; done
    r=$((r + 1))
done
# the set's matrices against separate runs of each method
for m in fisher grad-norm act-grad; do
    run "sep-$m" "$LM" "$m" "$OUTDIR/sep-$m.csv"
done
same=yes
cmp -s "$OUTDIR/one.csv" "$OUTDIR/set-grad-weight.csv" || same=no
for m in fisher grad-norm act-grad; do cmp -s "$OUTDIR/sep-$m.csv" "$OUTDIR/set-$m.csv" || same=no; done

best() { # best (lowest) seconds of tag over the runs, and each run's
    all=""; b=""
    r=1
    while [ "$r" -le "$RUNS" ]; do
        s=$(secs "$OUTDIR/$1.$r.log"); all="$all $s"
        if [ -z "$b" ] || [ "$(echo "$s < $b" | bc -l)" = 1 ]; then b=$s; fi
        r=$((r + 1))
    done
    echo "$b|$all"
}
ONE=$(best one); SETB=$(best set)
o=${ONE%%|*}; s=${SETB%%|*}
echo "SmolLM2-135M-Instruct Q4_1, seq 512, $N tokens, $THREADS threads, best of $RUNS alternating runs; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| run | methods | attribution s (best) | per run | ratio to one grad-weight |"
echo "|---|---|---:|---|---:|"
echo "| one pass | grad-weight | $o | ${ONE#*|} | 1.00 |"
echo "| one pass | $SET | $s | ${SETB#*|} | $(echo "scale=3; $s / $o" | bc -l) |"
k=0
for b in ${OLD:-}; do
    k=$((k + 1))
    OLDB=$(best "old$k"); ob=${OLDB%%|*}
    echo "| old binary $k ($b) | grad-weight | $ob | ${OLDB#*|} | $(echo "scale=3; $ob / $o" | bc -l) |"
    cmp -s "$OUTDIR/one.csv" "$OUTDIR/old$k.csv" && echo "- old binary $k and new grad-weight CSV: identical bytes" \
        || echo "- old binary $k and new grad-weight CSV differ (reduction order; max rel diff $(python3 -c "
a=[l.split(',')[1:] for l in open('$OUTDIR/one.csv').read().split()[1:]]
b=[l.split(',')[1:] for l in open('$OUTDIR/old$k.csv').read().split()[1:]]
print('%.2e' % max(abs(float(x)-float(y))/max(abs(float(y)),1e-300) for r,q in zip(a,b) for x,y in zip(r,q)))"))"
done
echo "- set matrices vs separate runs (grad-weight, fisher, grad-norm, act-grad): $([ $same = yes ] && echo 'identical bytes' || echo DIFFER)"
[ $same = yes ]
