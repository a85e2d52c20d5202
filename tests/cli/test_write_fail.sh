#!/bin/sh
# test_write_fail.sh -- outputs and checkpoints under write failures: a file-size
# limit (prlimit --fsize / ulimit -f: the kernel's EFBIG, SIGXFSZ ignored by the
# CLI), a full filesystem (a 64 KiB tmpfs filled up: ENOSPC) and a read-only one
# (the tmpfs remounted ro: EROFS; chmod would not stop root). For the csv, json,
# png, svg and pdf outputs of `plot` and `diff` and for the checkpoint of
# `attribute`, each must: exit 1, print one line naming the file and the reason,
# leave the previous file byte for byte as it was, and leave no *.tmp.* behind.
# The mount cases skip, saying why, only where mount is not permitted; the
# file-size cases skip only for a clang (libomp) build and an output smaller
# than libomp's limit (see fsize_limit; the gcc build runs them all). Prints "RESULT test_write_fail.sh PASSED FAILED"
# for tests/run.sh. Run from the repository root (the Makefile copies it to
# $BUILD/tests/test_write_fail); the binary is $LM_BIN, else build/layermap.
bin=${LM_BIN:-build/layermap}
models=${LM_MODELS:-../shared/models}
pass=0 fail=0
# sanitizer builds: LeakSanitizer's table of suppressed fontconfig leaks (see
# src/output/plot.c) is not part of the message the user sees
LSAN_OPTIONS=${LSAN_OPTIONS:+$LSAN_OPTIONS:}print_suppressions=0
export LSAN_OPTIONS
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL test_write_fail.sh: $*" >&2; }
finish() { echo "RESULT test_write_fail.sh $pass $fail"; [ "$fail" -eq 0 ]; exit $?; }

[ -x "$bin" ] || { bad "$bin missing: build it first"; finish; }
[ -d "$models/stories260K-hf" ] || { bad "$models/stories260K-hf missing (the shared test models)"; finish; }
base=$models/stories260K-hf ft=$models/stories260K-ft-hf
work=$(mktemp -d "${TMPDIR:-/tmp}/layermap-wfail-XXXXXX") || exit 1
mnt=$work/mnt
cleanup() {
    umount "$mnt" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# inputs made once without a limit: a matrix for plot, a text for attribute
"$bin" diff "$base" "$ft" --csv "$work/d5.csv" --quiet >/dev/null 2>&1 || { bad "diff to make the plot input failed"; finish; }
# plot's input: 64 layers (its outputs are then several KB), rows of the diff repeated
awk -F, 'NR == 1 { print; next } { row[n++] = substr($0, index($0, ",")) } END { for (i = 0; i < 64; i++) print i row[i % n] }' \
    "$work/d5.csv" >"$work/m.csv"
# The file-size limit: 200 bytes, below every output. A binary built by clang
# loads LLVM's OpenMP runtime, which at load time (before main) creates a
# 1024-byte registration file in /dev/shm and dies of SIGXFSZ below that: for
# it the limit is 1100 bytes, and a case whose output fits under it says so.
fsize_limit=200
if ldd "$bin" 2>/dev/null | grep -q 'libomp\.so'; then
    fsize_limit=1100
    echo "test_write_fail.sh: $bin loads libomp: file-size limit $fsize_limit bytes (libomp's startup file is 1024)"
fi
head -c 400 data/calib.txt >"$work/d.txt"

# expect WHAT LIMIT REASON FILE -- CMD...: run CMD under LIMIT (fsize: a file-size
# limit; none: as is) with a previous FILE in place; check the failure: exit
# $want (1 unless set), one line naming FILE and REASON.
want=1
expect() {
    e_what=$1 e_limit=$2 e_reason=$3 e_file=$4
    shift 5
    e_prev=$work/prev.bin
    # FILE=-: no previous file (a checkpoint that exists is resumed, not
    # replaced): after the failure there must be none
    e_none=0
    case $e_file in -*) e_none=1; e_file=${e_file#-} ;; esac
    if [ "$e_none" -eq 1 ]; then
        rm -f "$e_file"
    else
        [ -f "$e_file" ] || { bad "$e_what: no previous $e_file to protect"; return; }
        cp "$e_file" "$e_prev"
    fi
    if [ "$e_limit" = fsize ]; then
        if [ "$e_none" -eq 0 ] && [ "$(wc -c <"$e_file")" -le "$fsize_limit" ]; then
            echo "SKIP test_write_fail.sh: $e_what: its output ($(wc -c <"$e_file") bytes) fits under the $fsize_limit-byte limit"
            return
        fi
        if command -v prlimit >/dev/null 2>&1; then
            e_out=$(prlimit --fsize="$fsize_limit" "$@" 2>&1); e_rc=$?
        else
            e_out=$(ulimit -f 0 && "$@" 2>&1); e_rc=$?
        fi
    else
        e_out=$("$@" 2>&1); e_rc=$?
    fi
    [ "$e_rc" -eq "$want" ] && ok || bad "$e_what: exit $e_rc, want $want (output: $e_out)"
    e_lines=$(printf '%s\n' "$e_out" | wc -l)
    [ "$e_lines" -eq 1 ] && ok || bad "$e_what: $e_lines lines of output, want 1: $e_out"
    case $e_out in *"$e_file"*"$e_reason"*) ok ;; *) bad "$e_what: message does not name $e_file and '$e_reason': $e_out" ;; esac
    if [ "$e_none" -eq 1 ]; then
        [ ! -e "$e_file" ] && ok || bad "$e_what: $e_file left behind after the failure"
    else
        cmp -s "$e_file" "$e_prev" && ok || bad "$e_what: the previous $e_file changed"
    fi
    e_left=$(ls -a "$(dirname "$e_file")" | grep '\.tmp\.')
    [ -z "$e_left" ] && ok || bad "$e_what: temp file left: $e_left"
}

# every output of plot, diff and attribute's checkpoint, written into DIR;
# REASON2/WANT2: what the outputs (not the checkpoint) give, when it differs
run_all() {
    limit=$1 reason=$2 dir=$3 reason2=${4:-$2} want2=${5:-1}
    want=$want2
    for ext in csv json png svg pdf; do
        expect "plot .$ext ($limit)" "$limit" "$reason2" "$dir/plot.$ext" -- "$bin" plot "$work/m.csv" -o "$dir/plot.$ext" --quiet
        expect "diff .$ext ($limit)" "$limit" "$reason2" "$dir/diff.$ext" -- "$bin" diff "$base" "$ft" -o "$dir/diff.$ext" --quiet
    done
    want=1
    expect "attribute checkpoint ($limit)" "$limit" "$reason" "-$dir/ck.bin" -- \
        "$bin" attribute "$base" --data "$work/d.txt" -m grad-weight --seq-len 32 --checkpoint "$dir/ck.bin" --quiet
}

# previous files: what a run without a limit writes
make_previous() {
    dir=$1
    for ext in csv json png svg pdf; do
        "$bin" plot "$work/m.csv" -o "$dir/plot.$ext" --quiet >/dev/null 2>&1 || bad "plot .$ext into $dir failed"
        "$bin" diff "$base" "$ft" -o "$dir/diff.$ext" --quiet >/dev/null 2>&1 || bad "diff .$ext into $dir failed"
    done
    "$bin" attribute "$base" --data "$work/d.txt" -m grad-weight --seq-len 32 --checkpoint "$dir/ck.bin" --quiet \
        >/dev/null 2>&1 || bad "attribute checkpoint into $dir failed"
}

# 1. file-size limit (never skips)
mkdir -p "$work/fsize"
make_previous "$work/fsize"
run_all fsize "File too large" "$work/fsize"

# 2. full filesystem and 3. read-only filesystem: a small tmpfs
mkdir -p "$mnt"
if merr=$(mount -t tmpfs -o size=1m tmpfs "$mnt" 2>&1); then
    make_previous "$mnt"
    rm -f "$mnt/ck.bin" # a checkpoint that exists is resumed: none before the run (and its blocks stay taken)
    # fill it up: the filler takes every free block
    dd if=/dev/zero of="$mnt/filler" bs=4096 2>/dev/null
    run_all nospace "No space left on device" "$mnt"
    rm -f "$mnt/filler"
    if merr=$(mount -o remount,ro "$mnt" 2>&1); then
        # every output and the checkpoint are checked writable before any work
        # (cli_check_writable: one line, exit 1)
        run_all readonly "Read-only file system" "$mnt"
    else
        echo "test_write_fail.sh: SKIP read-only case: remount ro not permitted: $merr"
    fi
    umount "$mnt"
else
    echo "test_write_fail.sh: SKIP full-disk and read-only cases: mount not permitted: $merr"
fi
finish
