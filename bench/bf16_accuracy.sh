#!/bin/sh
# bench/bf16_accuracy.sh -- every method's matrix with --compute bf16 against
# --compute f32 on stories260K, SmolLM2-135M (Q4_1) and Gemma 3 270M (Q4_K_M):
# max |bf16 - f32| over the cells relative to the largest |f32| cell, and the
# Spearman rank correlation over the cells (`layermap compare`).
#
#   bench/bf16_accuracy.sh [COMPUTE]     COMPUTE: bf16 (default; needs AMX or
#                                        AVX512_BF16) or bf16-ref (any CPU)
#
# Data: data/calib.txt. The gradient methods and act-stats share one pass
# over 2048 tokens (seq 512; stories260K: 1024 tokens, seq 64); ablate,
# ablate-mean and ig (8 steps) cost a forward per module and use 256 tokens
# (stories260K: 512). Prints a markdown table (bench/README.md keeps it).
# Environment (to fit a session: ig costs steps x modules passes of its tokens,
# over an hour for SmolLM2 at the defaults on 2 cores):
#   ONLY      models to run, by name substring (default all: stories260K SmolLM2 Gemma)
#   FEW       tokens for ablate and ablate-mean (default per model, as above)
#   IG_TOK    tokens for ig (default FEW)      STEPS  ig's steps (default 8)
set -eu
cd "$(dirname "$0")/.."
COMPUTE=${1:-bf16}
BIN=${LM_BIN:-build/layermap}
CACHE=${LAYERMAP_CACHE:-$HOME/.cache/layermap}
MODELS=${LM_MODELS:-../shared/models}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
[ -x "$BIN" ] || { echo "build first: make" >&2; exit 2; }

# rel and spearman of two CSVs, one line: "rel spearman"
cmp_csv() {
    rel=$(python3 - "$1" "$2" <<'EOF'
import csv, math, sys
def rd(p):
    rows = list(csv.reader(open(p)))
    return [float(x) for r in rows[1:] for x in r[1:]]
a, b = rd(sys.argv[1]), rd(sys.argv[2])
pairs = [(x, y) for x, y in zip(a, b) if not math.isnan(x)]
mx = max(abs(x) for x, _ in pairs)
print("%.2e" % (max(abs(x - y) for x, y in pairs) / mx if mx else 0.0))
EOF
)
    sp=$("$BIN" compare "$1" "$2" | awk 'NR == 2 { print $4 }')
    echo "$rel $sp"
}

run() { # model tag seq tokens methods extra...
    r_m=$1 r_tag=$2 r_seq=$3 r_tok=$4 r_meth=$5
    shift 5
    for c in f32 "$COMPUTE"; do
        "$BIN" attribute "$r_m" --data data/calib.txt --seq-len "$r_seq" --max-tokens "$r_tok" -m "$r_meth" "$@" \
            --compute "$c" -q --csv "$T/$r_tag-{method}-$c.csv" >/dev/null 2>"$T/log" || { cat "$T/log" >&2; exit 1; }
    done
}

echo "| model | method | tokens | max abs diff / max cell | Spearman |"
echo "|---|---|---|---|---|"
for spec in "stories260K|$MODELS/stories260K.gguf|64|1024|512" \
            "SmolLM2-135M Q4_1|$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf|512|2048|256" \
            "Gemma 3 270M Q4_K_M|$CACHE/gemma-3-270m-q4_k_m.gguf|512|2048|256"; do
    name=${spec%%|*}; rest=${spec#*|}
    path=${rest%%|*}; rest=${rest#*|}
    seq=${rest%%|*}; rest=${rest#*|}
    tok=${rest%%|*}; few=${rest#*|}
    if [ ! -f "$path" ]; then echo "| $name | (missing: $path; scripts/fetch_models.sh) | | | |"; continue; fi
    if [ -n "${ONLY:-}" ]; then
        keep=0
        for o in $ONLY; do case $name in *"$o"*) keep=1 ;; esac; done
        [ "$keep" = 1 ] || continue
    fi
    few=${FEW:-$few}
    igt=${IG_TOK:-$few}
    tag=$(echo "$name" | tr -c 'A-Za-z0-9\n' _)
    fseq=$seq; [ "$few" -lt "$seq" ] && fseq=$few
    run "$path" "$tag" "$seq" "$tok" grad-weight,grad-weight-signed,fisher,grad-norm,act-grad,act-stats
    run "$path" "$tag" "$fseq" "$few" ablate
    run "$path" "$tag" "$fseq" "$few" ablate-mean
    iseq=$seq; [ "$igt" -lt "$seq" ] && iseq=$igt
    run "$path" "$tag" "$iseq" "$igt" ig --steps "${STEPS:-8}"
    for meth in grad-weight grad-weight-signed fisher grad-norm act-grad act-sq wanda ablate ablate-mean ig; do
        n=$tok
        case $meth in ablate | ablate-mean) n=$few ;; ig) n="$igt (${STEPS:-8} steps)" ;; esac
        f=$T/$tag-$meth-f32.csv
        [ -f "$f" ] || { echo "| $name | $meth | (no output) | | |"; continue; }
        set -- $(cmp_csv "$f" "$T/$tag-$meth-$COMPUTE.csv")
        echo "| $name | $meth | $n | $1 | $2 |"
    done
done
