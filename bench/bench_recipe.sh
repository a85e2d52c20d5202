#!/bin/sh
# bench_recipe.sh -- `layermap recipe` on a real model against llama.cpp's own
# mixture at the same size (layermap issue 13).
#
#   bench/bench_recipe.sh            SmolLM2-135M-Instruct (Q4_1 from scripts/fetch_models.sh)
#   MODEL=gemma bench/bench_recipe.sh   Gemma 3 270M (Q4_K_M)
#   ATTR_ARGS="--max-tokens 2048"       a shorter calibration (the whole text by default)
#
# 1. the model dequantized to F32: llama-quantize --allow-requantize SRC f32.gguf F32
# 2. one pass of `layermap attribute -m grad-weight,act-sq` over data/calib.txt (seq
#    512, all 5.7k tokens) writes both matrices and, from act-sq, the imatrix
#    (--imatrix) that every quantization below uses
# 3. llama.cpp's mixture: llama-quantize --imatrix I f32.gguf q3km.gguf Q3_K_M
# 4. B = bits per weight of Q3_K_M's quantizable weights (bench/gguf_bpw.py)
# 5. `layermap recipe` at B from the grad-weight matrix, and from act-sq alone (as
#    totals, and --per-weight);
#    uniform: every module q4_0, then q5_0, token_embd as the recipe's rule (q8_0),
#    and the grad-weight recipe at exactly each uniform file's bits per weight;
#    each quantized with --tensor-type-file
# 6. llama-perplexity on held-out text, 30 chunks of 512 tokens (-c 512 --chunks 30);
#    RUNS="q3km recipe-grad-weight" limits which (a log with a final estimate is reused)
#
# Held-out text: the GNU GPL v3, GPL v2 and LGPL v2.1 as Debian ships them in
# /usr/share/common-licenses (base-files; verbatim copies are allowed): about 80 KB,
# 18k tokens of English prose, nothing in common with data/calib.txt (stories).
# Runs under nice -n 5 with 2 threads. Work files in $W (default build/bench-recipe);
# the table goes to stdout and $W/results.txt.
set -eu

LM=${LM_BIN:-build/layermap}
BIN=$(scripts/build_llamacpp.sh --check) || { echo "bench_recipe: llama.cpp tools not built (scripts/build_llamacpp.sh)" >&2; exit 1; }
CACHE=${LAYERMAP_CACHE:-$HOME/.cache/layermap}
case "${MODEL:-smol}" in
smol) SRC=$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf; TAG=smol ;;
gemma) SRC=$CACHE/gemma-3-270m-q4_k_m.gguf; TAG=gemma ;;
*) echo "bench_recipe: MODEL is smol or gemma" >&2; exit 2 ;;
esac
[ -f "$SRC" ] || { echo "bench_recipe: $SRC missing (scripts/fetch_models.sh)" >&2; exit 1; }
W=${W:-build/bench-recipe}
mkdir -p "$W"
N="nice -n 5"
Q="$N $BIN/llama-quantize"
HELD=$W/heldout.txt
cat /usr/share/common-licenses/GPL-3 /usr/share/common-licenses/GPL-2 /usr/share/common-licenses/LGPL-2.1 >"$HELD"

F32=$W/$TAG-f32.gguf
[ -f "$F32" ] || $Q --allow-requantize "$SRC" "$F32" F32 >"$W/$TAG-f32.log" 2>&1
IM=$W/$TAG-imatrix.gguf
if [ ! -f "$IM" ] || [ ! -f "$W/$TAG-grad-weight.json" ]; then
    $N "$LM" attribute "$F32" --data data/calib.txt -m grad-weight,act-sq --seq-len 512 -t 2 ${ATTR_ARGS:-} \
        --imatrix "$IM" --json "$W/$TAG-{method}.json" --quiet 2>"$W/$TAG-attr.log"
fi
[ -f "$W/$TAG-q3km.gguf" ] || $Q --imatrix "$IM" "$F32" "$W/$TAG-q3km.gguf" Q3_K_M >"$W/$TAG-q3km.log" 2>&1

bpw() { "$LM" inspect "$1" --tensors --json | python3 bench/gguf_bpw.py; }
B=$(bpw "$W/$TAG-q3km.gguf" | cut -d' ' -f1)
echo "Q3_K_M: $B bits per weight over the quantizable weights"

# act-sq-pw: act-sq read as importance per weight (--per-weight)
for m in grad-weight act-sq act-sq-pw; do
    case $m in act-sq-pw) src=act-sq; pw=--per-weight ;; *) src=$m; pw= ;; esac
    "$LM" recipe "$W/$TAG-$src.json" --model "$F32" --bpw "$B" $pw -o "$W/$TAG-types-$m.txt" -q
    $Q --imatrix "$IM" --tensor-type-file "$W/$TAG-types-$m.txt" "$F32" "$W/$TAG-recipe-$m.gguf" Q8_0 \
        >"$W/$TAG-recipe-$m.log" 2>&1
    "$LM" inspect "$W/$TAG-recipe-$m.gguf" --tensors --json | python3 bench/gguf_bpw.py --check "$W/$TAG-types-$m.txt" >/dev/null
done
# uniform: every module one type (q4_0, q5_0), the fixed tensors as in the recipe; and
# the grad-weight recipe at exactly each uniform file's bits per weight
for u in q4_0 q5_0; do
    sed "s/^\(\^blk[^=]*\)=.*/\1=$u/" "$W/$TAG-types-grad-weight.txt" >"$W/$TAG-types-uniform-$u.txt"
    $Q --imatrix "$IM" --tensor-type-file "$W/$TAG-types-uniform-$u.txt" "$F32" "$W/$TAG-uniform-$u.gguf" Q8_0 \
        >"$W/$TAG-uniform-$u.log" 2>&1
    BU=$(bpw "$W/$TAG-uniform-$u.gguf" | cut -d' ' -f1)
    echo "uniform $u: $BU bits per weight over the quantizable weights"
    "$LM" recipe "$W/$TAG-grad-weight.json" --model "$F32" --bpw "$BU" -o "$W/$TAG-types-gw-at-$u.txt" -q
    $Q --imatrix "$IM" --tensor-type-file "$W/$TAG-types-gw-at-$u.txt" "$F32" "$W/$TAG-recipe-grad-weight-at-$u.gguf" Q8_0 \
        >"$W/$TAG-recipe-gw-at-$u.log" 2>&1
    "$LM" inspect "$W/$TAG-recipe-grad-weight-at-$u.gguf" --tensors --json |
        python3 bench/gguf_bpw.py --check "$W/$TAG-types-gw-at-$u.txt" >/dev/null
done

OUT=$W/$TAG-results.txt
: >"$OUT"
for f in ${RUNS:-f32 q3km recipe-grad-weight recipe-act-sq recipe-act-sq-pw uniform-q4_0 recipe-grad-weight-at-q4_0 \
         uniform-q5_0 recipe-grad-weight-at-q5_0}; do
    g=$W/$TAG-$f.gguf
    log=$W/$TAG-ppl-$f.log
    [ -s "$log" ] && grep -q "Final estimate" "$log" ||
        $N "$BIN/llama-perplexity" -m "$g" -f "$HELD" -c 512 --chunks 30 -t 2 >"$log" 2>&1
    ppl=$(grep -o 'Final estimate: PPL = [0-9.]* +/- [0-9.]*' "$log" | sed 's/Final estimate: PPL = //')
    size=$(stat -c %s "$g")
    echo "$f $size $ppl $(bpw "$g" | cut -d' ' -f1,4-)" | tee -a "$OUT"
done
