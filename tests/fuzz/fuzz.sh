#!/bin/sh
# tests/fuzz/fuzz.sh -- coverage-guided fuzzing campaigns of the readers
# (harnesses tests/fuzz/fuzz_NAME.c, built by `make fuzz` into build/fuzz/).
#
#   tests/fuzz/fuzz.sh SECONDS [NAME...]   a campaign of SECONDS per harness (all by default)
#   tests/fuzz/fuzz.sh --merge [NAME...]   minimise seeds + campaign finds into tests/fuzz/corpus/NAME
#
# A campaign runs libFuzzer in fork mode with one worker (-fork=1), so that a
# crash, timeout or out-of-memory input is saved and counted and the campaign
# goes on: limits -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 (s per input).
# A dictionary tests/fuzz/dict/NAME.dict (the reader's own string literals,
# written by make_seeds.py) is used when present.
# It starts from the committed corpus (copied to build/fuzz/work/NAME, where new
# inputs go), saves failing inputs in build/fuzz/artifacts/NAME/ and prints a
# table: harness, seconds (wall), executions, coverage (edges: libFuzzer's cov:),
# new corpus entries, crashes, timeouts, OOMs, and cpu_s, the CPU seconds (user +
# system) the campaign's processes used: on a shared machine the CPU time, not
# the wall time, is what was spent fuzzing. Exit 1 if any input failed.
# On a shared machine run it under nice (nice -n 15 tests/fuzz/fuzz.sh 60).
# Run from the repository root; the shared models are $LM_MODELS or ../shared/models.
set -u
cd "$(dirname "$0")/../.." || exit 2
: "${LM_MODELS:=$(cd ../shared/models 2>/dev/null && pwd)}"
export LM_MODELS
export LM_ROOT="$PWD"
export OMP_WAIT_POLICY=passive OMP_NUM_THREADS=1
all="gguf safetensors st_index config tok_json tok_encode gguf_tok jsonl matrix ckpt"
fz=build/fuzz

# CPU seconds (user + system) of this shell's finished children so far, into
# $cpu ("times" must run in this shell, not in a $(...) subshell).
cpu_children() {
    times >"$fz/times.$$"
    cpu=$(awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); t += a[1] * 60 + a[2] } printf "%d", t }' "$fz/times.$$")
    rm -f "$fz/times.$$"
}

# Harness scratch directories of processes that died (crashed or killed inputs).
sweep() {
    for d in /dev/shm/layermap-fuzz-* "${TMPDIR:-/tmp}"/layermap-fuzz-*; do
        [ -d "$d" ] || continue
        pid=${d##*/layermap-fuzz-}; pid=${pid%%-*}
        kill -0 "$pid" 2>/dev/null || rm -rf "$d"
    done
}

if [ "${1:-}" = --merge ]; then
    shift
    names=${*:-$all}
    for n in $names; do
        [ -x "$fz/fuzz_$n" ] || { echo "fuzz.sh: $fz/fuzz_$n missing (make fuzz)" >&2; exit 2; }
        old=tests/fuzz/corpus/$n new=$fz/merge/$n
        rm -rf "$new"; mkdir -p "$new" "$old"
        "$fz/fuzz_$n" -merge=1 -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 "$new" "$old" \
            $( [ -d "$fz/seeds/$n" ] && echo "$fz/seeds/$n") $( [ -d "$fz/work/$n" ] && echo "$fz/work/$n") \
            >"$fz/merge-$n.log" 2>&1 || { echo "fuzz.sh: merge of $n failed (see $fz/merge-$n.log)" >&2; exit 1; }
        # regression inputs stay whatever their coverage
        for f in "$old"/regress-*; do [ -f "$f" ] && cp "$f" "$new/"; done
        rm -rf "$old"; mv "$new" "$old"
        echo "$n: $(ls "$old" | wc -l) inputs, $(du -sk "$old" | cut -f1) KB"
        sweep
    done
    exit 0
fi

secs=${1:?usage: fuzz.sh SECONDS [NAME...] | --merge [NAME...]}
shift
names=${*:-$all}
bad=0
printf '%-12s %7s %11s %9s %8s %8s %9s %5s %6s\n' harness seconds executions cov:edges new_corp crashes timeouts ooms cpu_s
for n in $names; do
    bin=$fz/fuzz_$n
    [ -x "$bin" ] || { echo "fuzz.sh: $bin missing (make fuzz)" >&2; exit 2; }
    work=$fz/work/$n art=$fz/artifacts/$n log=$fz/campaign-$n.log
    mkdir -p "$work" "$art"
    cp tests/fuzz/corpus/"$n"/* "$work"/ 2>/dev/null
    before=$(ls "$work" | wc -l)
    dict=""
    [ -f tests/fuzz/dict/"$n".dict ] && dict=-dict=tests/fuzz/dict/$n.dict
    cpu_children; t0=$(date +%s) c0=$cpu
    "$bin" $dict -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 -max_total_time="$secs" \
        -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 -artifact_prefix="$art/" "$work" >"$log" 2>&1
    cpu_children; t1=$(date +%s) c1=$cpu
    sweep
    after=$(ls "$work" | wc -l)
    # fork mode's status lines: "#EXECS: cov: C ft: F corp: N exec/s E oom/timeout/crash: O/T/C time: S ..."
    last=$(grep -E '^#[0-9]+: cov: ' "$log" | tail -n 1)
    execs=$(printf '%s' "$last" | sed -n 's/^#\([0-9]*\):.*/\1/p')
    cov=$(printf '%s' "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
    otc=$(printf '%s' "$last" | sed -n 's/.*oom\/timeout\/crash: \([0-9]*\/[0-9]*\/[0-9]*\).*/\1/p')
    ooms=${otc%%/*}; rest=${otc#*/}; tmo=${rest%%/*}; crs=${rest#*/}
    [ -n "$execs" ] || { execs=?; cov=?; ooms=?; tmo=?; crs=?; bad=1; echo "$n: no status line (see $log)" >&2; }
    printf '%-12s %7s %11s %9s %8s %8s %9s %5s %6s\n' "$n" "$((t1 - t0))" "$execs" "$cov" "$((after - before))" "$crs" "$tmo" \
        "$ooms" "$((c1 - c0))"
    [ "$crs$tmo$ooms" = 000 ] || bad=1
done
[ "$bad" -eq 0 ] || echo "failing inputs: $fz/artifacts/*/ (replay: build/tests/test_fuzz_replay NAME FILE)" >&2
exit "$bad"
