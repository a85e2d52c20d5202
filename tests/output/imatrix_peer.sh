#!/bin/sh
# make test-llamacpp: llama.cpp judges layermap's imatrix export.
#
# For stories260K (F32 GGUF, chunks of 128) and SmolLM2-135M (its Q4_1 GGUF
# dequantized to F32 by llama-quantize, so that llama.cpp's matrix products
# see F32 weights as layermap's do; chunks of 256, 16 of them):
#   1. layermap attribute -m act-stats --imatrix-chunk N --imatrix lm.gguf (and lm.dat)
#   2. llama-imatrix -m MODEL -f data/calib.txt -c N --chunks 16 on the same text,
#      once with its defaults (ref.gguf) and once with an F32 KV cache and no
#      flash attention (ref32.gguf: -ctk f32 -ctv f32 -fa off)
#   3. imatrix_cmp: same weights, chunk_size, chunk_count and counts, and every
#      in_sum2 cell of lm.gguf within 1% of ref.gguf's (the default F16 KV cache
#      rounds K and V to 11 bits: measured up to 0.7% on attn_output's input) and
#      within 0.05% of ref32.gguf's (F32 arithmetic both sides, llama.cpp summing
#      <= 4096 squares in F32: measured <= 0.003%; layermap's own chunks instead
#      of llama.cpp's miss this by 27% on stories260K, which adds BOS)
#   4. llama-quantize --imatrix lm.gguf (lm.dat, ref.gguf) MODEL out.gguf Q4_0
#      accepts it: exit 0, "loaded K importance matrix entries" with K = 7 x
#      layers, no "did not find weights" for a blk.* tensor, the quantized file
#      differs from the one quantized without an imatrix (it was used), and has
#      the size of the one quantized with llama-imatrix's own file (an imatrix
#      makes llama-quantize pick other types for the first ffn_down layers).
# The llama.cpp tools come from scripts/build_llamacpp.sh (a cache, never
# vendored). Without them this prints SKIPPED and exits 0, unless
# LM_REQUIRE_LLAMACPP=1 (CI builds them), then it fails. SmolLM2 is from
# scripts/fetch_models.sh; without it that half is SKIPPED the same way
# (LM_REQUIRE_REAL=1 makes it a failure).
set -u
cd "$(dirname "$0")/../.." || exit 2
bin=${LM_BIN:-build/layermap}
judge=${LM_IMATRIX_CMP:-build/tests/imatrix_cmp}
models=${LM_MODELS:-../shared/models}
cache=${LAYERMAP_CACHE:-$HOME/.cache/layermap}
[ -x "$bin" ] && [ -x "$judge" ] || { echo "imatrix_peer: $bin or $judge is not built (make test-llamacpp)"; exit 2; }
if ! lbin=$(scripts/build_llamacpp.sh --check 2>/dev/null); then
    if [ "${LM_REQUIRE_LLAMACPP:-0}" = 1 ]; then
        echo "imatrix_peer: FAIL: llama.cpp tools not built and LM_REQUIRE_LLAMACPP=1 (run scripts/build_llamacpp.sh)"
        exit 1
    fi
    echo "imatrix_peer: SKIPPED: llama.cpp tools not built (scripts/build_llamacpp.sh builds them: ~7 min of CPU on 2 cores)"
    exit 0
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/layermap-imatrix-XXXXXX") || exit 2
trap 'rm -rf "$tmp"' EXIT
fail=0
bad() { echo "imatrix_peer: FAIL: $*"; fail=1; }
threads=$(nproc 2>/dev/null || echo 2)
text=data/calib.txt

# peer NAME MODEL CHUNK NCHUNKS: steps 1-4 for one model
peer() {
    name=$1 model=$2 chunk=$3 nchunks=$4
    d=$tmp/$name
    mkdir -p "$d"
    n_layer=$("$bin" inspect "$model" --json | sed -n 's/.*"n_layer":[[:space:]]*\([0-9]*\).*/\1/p' | head -n 1)
    [ -n "$n_layer" ] || { bad "$name: no n_layer from layermap inspect"; return; }
    "$bin" attribute "$model" --data "$text" -m act-stats --imatrix-chunk "$chunk" \
        --max-tokens $((chunk * nchunks)) --imatrix "$d/lm.gguf" --quiet >"$d/lm.log" 2>&1 ||
        { bad "$name: layermap attribute --imatrix failed: $(tail -n 1 "$d/lm.log")"; return; }
    "$bin" attribute "$model" --data "$text" -m act-sq --imatrix-chunk "$chunk" \
        --max-tokens $((chunk * nchunks)) --imatrix "$d/lm.dat" --quiet >"$d/lmdat.log" 2>&1 ||
        { bad "$name: layermap attribute --imatrix .dat failed: $(tail -n 1 "$d/lmdat.log")"; return; }
    for ref in ref ref32; do
        extra=""
        [ "$ref" = ref32 ] && extra="-ctk f32 -ctv f32 -fa off"
        # shellcheck disable=SC2086
        "$lbin/llama-imatrix" -m "$model" -f "$text" -c "$chunk" --chunks "$nchunks" -t "$threads" --no-ppl \
            $extra -o "$d/$ref.gguf" >"$d/$ref.log" 2>&1 ||
            { bad "$name: llama-imatrix $extra failed: $(tail -n 3 "$d/$ref.log" | tr '\n' ' ')"; return; }
    done
    for pair in ref:0.01 ref32:0.0005; do
        ref=${pair%%:*} tol=${pair#*:}
        echo "imatrix_peer: $name: layermap vs llama-imatrix -c $chunk --chunks $nchunks ($ref.gguf, tolerance $tol):"
        "$judge" "$d/lm.gguf" "$d/$ref.gguf" "$tol" >"$d/cmp-$ref.out" 2>&1 ||
            bad "$name: layermap's imatrix differs from llama-imatrix's $ref.gguf"
        sed 's/^/  /' "$d/cmp-$ref.out"
    done
    "$lbin/llama-quantize" "$model" "$d/plain.gguf" Q4_0 "$threads" >"$d/q-plain.log" 2>&1 ||
        { bad "$name: llama-quantize without an imatrix failed: $(tail -n 1 "$d/q-plain.log")"; return; }
    for im in ref.gguf lm.gguf lm.dat; do
        log=$d/q-$im.log
        if ! "$lbin/llama-quantize" --imatrix "$d/$im" "$model" "$d/q-$im.gguf" Q4_0 "$threads" >"$log" 2>&1; then
            bad "$name: llama-quantize --imatrix $im failed: $(grep -iE 'error|failed' "$log" | head -n 2 | tr '\n' ' ')"
            continue
        fi
        k=$(sed -n 's/.*loaded \([0-9]*\) importance matrix entries.*/\1/p' "$log" | head -n 1)
        [ "$k" = $((7 * n_layer)) ] || bad "$name: llama-quantize loaded '${k}' entries from $im, want $((7 * n_layer))"
        if grep -q 'did not find weights for blk\.' "$log"; then
            bad "$name: llama-quantize found no imatrix data for: $(grep 'did not find weights for blk\.' "$log" | head -n 3 | tr '\n' ' ')"
        fi
        cmp -s "$d/q-$im.gguf" "$d/plain.gguf" && bad "$name: quantizing with $im gave the file quantized without it"
        [ "$im" = ref.gguf ] || [ "$(stat -c %s "$d/q-$im.gguf")" = "$(stat -c %s "$d/q-ref.gguf.gguf" 2>/dev/null)" ] ||
            [ ! -f "$d/q-ref.gguf.gguf" ] || bad "$name: Q4_0 with $im has another size than with llama-imatrix's file"
        echo "  llama-quantize --imatrix $im: $k entries used, Q4_0 written ($(stat -c %s "$d/q-$im.gguf") bytes)"
    done
}

peer stories260K "$models/stories260K.gguf" 128 16

smol=$cache/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -f "$smol" ]; then
    f32=$tmp/smollm2-f32.gguf
    if "$lbin/llama-quantize" --allow-requantize "$smol" "$f32" F32 "$threads" >"$tmp/deq.log" 2>&1; then
        peer SmolLM2 "$f32" 256 16
    else
        bad "SmolLM2: llama-quantize to F32 failed: $(tail -n 1 "$tmp/deq.log")"
    fi
elif [ "${LM_REQUIRE_REAL:-0}" = 1 ]; then
    bad "SmolLM2: $smol missing and LM_REQUIRE_REAL=1 (scripts/fetch_models.sh)"
else
    echo "imatrix_peer: SmolLM2: SKIPPED: $smol missing (scripts/fetch_models.sh)"
fi

if [ "$fail" -ne 0 ]; then
    echo "imatrix_peer: FAILED (files kept in $tmp)"
    trap - EXIT
    exit 1
fi
echo "imatrix_peer: all passed"
