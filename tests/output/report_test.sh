#!/bin/sh
# make test-report: render `layermap report` in headless Chromium and check the
# screenshot and the page: not blank (luminance variance, distinct colours),
# every figure present (one <svg> per input, each with layers x 7 cells), no
# console errors (Chromium's log: 'Uncaught', ':CONSOLE'). The console check
# is first shown to catch a page that throws. Without chromium it skips (exit
# 0, printing why), or fails under LM_REQUIRE_CHROMIUM=1 (.ci/run installs it
# with scripts/deps.sh chromium).
set -u
cd "$(dirname "$0")/../.." || exit 2
bin=${LM_BIN:-build/layermap}
chrome=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$chrome" ]; then
    if [ "${LM_REQUIRE_CHROMIUM:-0}" = 1 ]; then
        echo "report_test: FAIL: chromium is not installed and LM_REQUIRE_CHROMIUM=1 (scripts/deps.sh chromium)"
        exit 1
    fi
    echo "report_test: SKIPPED: chromium is not installed (scripts/deps.sh chromium)"
    exit 0
fi
[ -x "$bin" ] || { echo "report_test: $bin is not built (run make)"; exit 2; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/layermap-report-XXXXXX") || exit 2
trap 'rm -rf "$tmp"' EXIT
fail=0
bad() { echo "report_test: FAIL: $*"; fail=1; }

# the PNG helper (cairo is a dependency of layermap already)
${CC:-cc} -O1 -o "$tmp/png_stats" tests/output/png_stats.c $(pkg-config --cflags --libs cairo) || exit 2

# inputs: a JSON with run metadata, a CSV with NaN cells, a JSON of 4 layers
cat > "$tmp/meta.json" <<'JSON'
{"model": "stories<260K>", "method": "grad-weight", "norm": "none", "note": "data & notes",
 "meta": {"tokens": 2048, "data": "calib.txt", "opts": {"seq_len": 256}},
 "modules": ["attn.q","attn.k","attn.v","attn.o","mlp.up","mlp.down","mlp.gate"], "layers": 4,
 "values": [[1,2,3,4,5,6,null],[7,8,9,10,11,12,13],[3,1,4,1,5,9,2],[6,5,3,5,8,9,7]]}
JSON
printf 'q4_k for layers 0-1\nblk.0.attn_q.weight=q6_k <b>\n' > "$tmp/recipe.txt"
"$bin" report "$tmp/meta.json" tests/data/compare/a.csv tests/data/compare/c.json \
    --recipe "$tmp/recipe.txt" -o "$tmp/report.html" >/dev/null || bad "layermap report failed"
html=$tmp/report.html

# figures: 3 heatmaps, 28 cells each (4 layers x 7)
n_svg=$(grep -c '<svg class="heatmap"' "$html")
[ "$n_svg" -eq 3 ] || bad "$n_svg heatmaps, expected 3"
cells=$(awk '/<svg class="heatmap"/{k++} /class="cell"/{c[k]++} END{for(i=1;i<=k;i++) printf "%d ", c[i]}' "$html")
[ "$cells" = "28 28 28 " ] || bad "cells per figure: $cells (expected 28 28 28)"
grep -q 'calib.txt' "$html" || bad "meta key 'data' missing"
grep -q 'stories&lt;260K&gt;' "$html" || bad "model name not escaped"
grep -q 'q6_k &lt;b&gt;' "$html" || bad "recipe missing or not escaped"
if grep -Eq '(src|href)="(https?:)?//' "$html" || grep -q 'url(' "$html"; then bad "an external URL"; fi

# render: screenshot + console log
render() { # html png log
    timeout 60 "$chrome" --headless --no-sandbox --disable-gpu --no-first-run --hide-scrollbars \
        --enable-logging=stderr --v=0 --window-size=1200,1800 --screenshot="$2" "file://$1" >"$3" 2>&1
}
console_errors() { grep -E 'Uncaught|ERROR:CONSOLE|:CONSOLE\(' "$1"; }

# the console check must catch a page that throws
printf '<!DOCTYPE html><html><body><p>x</p><script>throw new Error("layermap-selftest")</script></body></html>\n' \
    > "$tmp/throw.html"
render "$tmp/throw.html" "$tmp/throw.png" "$tmp/throw.log"
console_errors "$tmp/throw.log" >/dev/null || bad "the console check does not see a thrown error (log: $(tail -n 3 "$tmp/throw.log"))"

t0=$(date +%s)
render "$html" "$tmp/report.png" "$tmp/report.log" || bad "chromium failed: $(tail -n 3 "$tmp/report.log")"
t1=$(date +%s)
if console_errors "$tmp/report.log"; then bad "console errors (above)"; fi
stats=$("$tmp/png_stats" "$tmp/report.png") || bad "no screenshot"
set -- $stats
echo "report_test: screenshot ${1}x${2}, luminance mean $3 variance $4, $5 colours, rendered in $((t1 - t0)) s"
awk -v v="$4" 'BEGIN{exit !(v > 100)}' || bad "screenshot looks blank (luminance variance $4)"
[ "${5:-0}" -ge 50 ] || bad "only $5 distinct colours: heatmaps not drawn"
[ -n "${REPORT_PNG:-}" ] && cp "$tmp/report.png" "$REPORT_PNG"
if [ "$fail" -eq 0 ]; then echo "report_test: passed"; else echo "report_test: failed"; fi
exit "$fail"
