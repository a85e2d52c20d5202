#!/bin/sh
# tests/fuzz/fuzz.sh -- coverage-guided fuzzing campaigns of the readers
# (harnesses tests/fuzz/fuzz_NAME.c, built by `make fuzz` into build/fuzz/).
#
#   tests/fuzz/fuzz.sh SECONDS [NAME...]   a campaign of SECONDS (wall) per harness (all by default)
#   tests/fuzz/fuzz.sh --cpu SECONDS ...   rounds of at most FUZZ_ROUND (300) s wall until each
#                                          harness has used SECONDS of CPU time (user + system)
#   FUZZ_JOBS=N                            N harnesses at a time (default 1)
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
# $cpu ("times" must run in this shell, not in a $(...) subshell). $1 names
# the file: parallel campaigns are subshells, which share $$.
cpu_children() {
    times >"$fz/times.$$.$1"
    cpu=$(awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); t += a[1] * 60 + a[2] } printf "%d", t }' "$fz/times.$$.$1")
    rm -f "$fz/times.$$.$1"
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

# One harness's campaign: rounds of libFuzzer (each at most $round s wall) until
# the harness has used $secs CPU seconds (--cpu) or one round of $secs s wall
# (default); its table row goes to $fz/row-$n. Runs in a subshell, so that
# `times` counts only this harness's processes.
campaign() {
    n=$1
    bin=$fz/fuzz_$n
    work=$fz/work/$n art=$fz/artifacts/$n log=$fz/campaign-$n.log
    mkdir -p "$work" "$art"
    cp tests/fuzz/corpus/"$n"/* "$work"/ 2>/dev/null
    before=$(ls "$work" | wc -l)
    dict=""
    [ -f tests/fuzz/dict/"$n".dict ] && dict=-dict=tests/fuzz/dict/$n.dict
    : >"$fz/stamp-$n" # this campaign's failing inputs are the files newer than it
    cpu_children "$n"; t0=$(date +%s) c0=$cpu
    execs=0 ooms=0 tmo=0 crs=0 cov=? rounds=0 used=0
    : >"$log"
    while :; do
        if [ "$mode" = cpu ]; then
            left=$((secs - used)); [ "$left" -gt 0 ] || break
            wall=$round; [ "$left" -lt "$wall" ] && wall=$left
            [ "$wall" -lt 10 ] && wall=10
        else
            [ "$rounds" -eq 0 ] || break
            wall=$secs
        fi
        "$bin" $dict -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 -max_total_time="$wall" \
            -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 -artifact_prefix="$art/" "$work" >"$log.round" 2>&1
        cat "$log.round" >>"$log"
        rounds=$((rounds + 1))
        cpu_children "$n"; used=$((cpu - c0))
        sweep
        # fork mode's status lines: "#EXECS: cov: C ft: F corp: N exec/s E oom/timeout/crash: O/T/C time: S ..."
        last=$(grep -E '^#[0-9]+: cov: ' "$log.round" | tail -n 1)
        e=$(printf '%s' "$last" | sed -n 's/^#\([0-9]*\):.*/\1/p')
        otc=$(printf '%s' "$last" | sed -n 's/.*oom\/timeout\/crash: \([0-9]*\/[0-9]*\/[0-9]*\).*/\1/p')
        if [ -z "$e" ] || [ -z "$otc" ]; then
            echo "$n: no status line (see $log)" >&2
            execs=? cov=? ooms=? tmo=? crs=?
            break
        fi
        cov=$(printf '%s' "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
        o=${otc%%/*}; rest=${otc#*/}
        execs=$((execs + e)) ooms=$((ooms + o)) tmo=$((tmo + ${rest%%/*})) crs=$((crs + ${rest#*/}))
    done
    rm -f "$log.round"
    # failing inputs by their saved files too: a round's last status line can
    # precede an event at its end
    for kind in crash timeout oom; do
        k=$(find "$art" -name "$kind-*" -newer "$fz/stamp-$n" 2>/dev/null | wc -l)
        case $kind in
        crash) [ "$crs" = ? ] || [ "$k" -le "$crs" ] || crs=$k ;;
        timeout) [ "$tmo" = ? ] || [ "$k" -le "$tmo" ] || tmo=$k ;;
        oom) [ "$ooms" = ? ] || [ "$k" -le "$ooms" ] || ooms=$k ;;
        esac
    done
    t1=$(date +%s)
    after=$(ls "$work" | wc -l)
    printf '%-12s %7s %11s %9s %8s %8s %9s %5s %6s\n' "$n" "$((t1 - t0))" "$execs" "$cov" "$((after - before))" "$crs" "$tmo" \
        "$ooms" "$used" >"$fz/row-$n"
}

mode=wall
if [ "${1:-}" = --cpu ]; then mode=cpu; shift; fi
secs=${1:?usage: fuzz.sh [--cpu] SECONDS [NAME...] | --merge [NAME...]}
shift
names=${*:-$all}
: "${FUZZ_JOBS:=1}" "${FUZZ_ROUND:=300}"
round=$FUZZ_ROUND
for n in $names; do
    [ -x "$fz/fuzz_$n" ] || { echo "fuzz.sh: $fz/fuzz_$n missing (make fuzz)" >&2; exit 2; }
    rm -f "$fz/row-$n"
done
# FUZZ_JOBS harnesses at a time, each in its own subshell
running=0
for n in $names; do
    (campaign "$n") &
    running=$((running + 1))
    if [ "$running" -ge "$FUZZ_JOBS" ]; then wait; running=0; fi
done
wait
bad=0
printf '%-12s %7s %11s %9s %8s %8s %9s %5s %6s\n' harness seconds executions cov:edges new_corp crashes timeouts ooms cpu_s
for n in $names; do
    if [ -f "$fz/row-$n" ]; then cat "$fz/row-$n"; else echo "$n: no result" >&2; bad=1; continue; fi
    set -- $(cat "$fz/row-$n")
    [ "$6$7$8" = 000 ] || bad=1
done
[ "$bad" -eq 0 ] || echo "failing inputs: $fz/artifacts/*/ (replay: build/tests/test_fuzz_replay NAME FILE)" >&2
exit "$bad"
