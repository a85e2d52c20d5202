#!/bin/sh
# test_blas.sh -- layermap runs Debian's OpenMP OpenBLAS, and says so when it
# does not (src/compute/blas_info.c, the rpath in the Makefile).
#
#  - the binary has a RUNPATH (not a DT_RPATH) to the OpenMP build;
#  - with the pthread build installed, which makes it the system's default
#    libopenblas.so.0, a plain run still loads the OpenMP build and prints no
#    warning (`--version` and a real `ppl` on stories260K);
#  - LD_LIBRARY_PATH to the pthread build loads it, and each command prints
#    exactly one warning line naming that file, the build and the core, and
#    still computes; LAYERMAP_NO_BLAS_WARNING=1 silences it, and one OpenMP
#    thread needs no warning.
# The pthread build (libopenblas0-pthread, a Debian package) is installed with
# apt-get when missing; where that is impossible (not root, no apt-get, no
# network) the test prints SKIP and why, and so it does where the OpenMP build
# itself is not installed (not Debian x86-64: scripts/deps.sh installs it).
# Prints "RESULT test_blas.sh PASSED FAILED" for tests/run.sh. Run from the
# repository root (the Makefile copies it to $BUILD/tests/test_blas); the
# binary is $LM_BIN, else build/layermap.
bin=${LM_BIN:-build/layermap}
models=${LM_MODELS:-../shared/models}
omp=/usr/lib/x86_64-linux-gnu/openblas-openmp
pth=/usr/lib/x86_64-linux-gnu/openblas-pthread
pass=0 fail=0
LSAN_OPTIONS=${LSAN_OPTIONS:+$LSAN_OPTIONS:}print_suppressions=0
export LSAN_OPTIONS
# two OpenMP threads even on a one-core machine: with one, no build is wrong
OMP_NUM_THREADS=2
export OMP_NUM_THREADS
unset LD_LIBRARY_PATH LD_PRELOAD LAYERMAP_NO_BLAS_WARNING
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL test_blas.sh: $*" >&2; }
finish() { echo "RESULT test_blas.sh $pass $fail"; [ "$fail" -eq 0 ]; exit $?; }
skip() { echo "SKIP test_blas.sh: $*" >&2; finish; }

[ -x "$bin" ] || { bad "$bin missing: build it first"; finish; }
[ -f "$models/stories260K.gguf" ] || { bad "$models/stories260K.gguf missing (the shared test models)"; finish; }
[ -f "$omp/libopenblas.so.0" ] || skip "$omp/libopenblas.so.0 missing: the OpenMP OpenBLAS (libopenblas0-openmp) is not installed"
work=$(mktemp -d "${TMPDIR:-/tmp}/layermap-blas-XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
trap 'exit 1' INT TERM

# the rpath: a RUNPATH to the OpenMP build, no DT_RPATH (which would beat LD_LIBRARY_PATH)
if command -v readelf >/dev/null 2>&1; then
    dyn=$(readelf -d "$bin")
    rp=$(printf '%s\n' "$dyn" | sed -n 's/.*(RUNPATH).*\[\(.*\)\]$/\1/p')
    case ":$rp:" in
    *":$omp:"*) ok ;;
    *) bad "readelf -d $bin: no RUNPATH to $omp: $(printf '%s\n' "$dyn" | grep -E 'R(UN)?PATH')" ;;
    esac
    if printf '%s\n' "$dyn" | grep -q "(RPATH)"; then bad "readelf -d $bin: a DT_RPATH (LD_LIBRARY_PATH could not override it)"; else ok; fi
else
    bad "readelf missing (binutils, installed with the compiler)"
fi

if [ ! -f "$pth/libopenblas.so.0" ]; then
    why=""
    if [ "$(id -u)" -ne 0 ]; then why="not root"
    elif ! command -v apt-get >/dev/null 2>&1; then why="no apt-get"
    elif ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q libopenblas0-pthread >"$work/apt.log" 2>&1; then
        why="apt-get install libopenblas0-pthread failed: $(grep -E '^(E|W):' "$work/apt.log" | head -n 1)"
    elif [ ! -f "$pth/libopenblas.so.0" ]; then why="libopenblas0-pthread installed no $pth/libopenblas.so.0"
    fi
    [ -n "$why" ] && skip "the pthread OpenBLAS ($pth) is not installed and cannot be: $why"
    echo "test_blas.sh: installed libopenblas0-pthread (now the system's default libopenblas.so.0)"
fi
printf 'Once upon a time there was a little girl named Lily. She liked to play in the park.\n' >"$work/t.txt"

# run NAME ENV... -- CMD...: stdout in $work/NAME.out, stderr in $work/NAME.err, exit in $rc
run() {
    r_name=$1; shift
    env "$@" >"$work/$r_name.out" 2>"$work/$r_name.err"; rc=$?
}
nwarn() { grep -c 'warning' "$work/$1.err"; }

# normal runs: the OpenMP build, whatever the system default is; no warning
run version "$bin" --version
if [ "$rc" -eq 0 ] && grep -q "^blas library: $omp/.* (OpenMP build)\$" "$work/version.out"; then ok; else
    bad "--version (exit $rc) does not report the OpenMP build in $omp: $(grep '^blas' "$work/version.out")"; fi
if [ "$(nwarn version)" -eq 0 ]; then ok; else bad "--version warns: $(cat "$work/version.err")"; fi
run ppl "$bin" ppl "$models/stories260K.gguf" "$work/t.txt"
if [ "$rc" -eq 0 ] && grep -q '^perplexity ' "$work/ppl.out"; then ok; else bad "ppl failed (exit $rc): $(cat "$work/ppl.err")"; fi
if [ "$(nwarn ppl)" -eq 0 ]; then ok; else bad "ppl warns: $(cat "$work/ppl.err")"; fi

# LD_LIBRARY_PATH to the pthread build: exactly one line naming it, and the run still works
want="^layermap: warning: loaded $pth/[^ ]* (OpenBLAS pthreads build, core [A-Za-z0-9]*) beside OpenMP threads: .*unset LD_LIBRARY_PATH"
for c in version ppl; do
    case $c in
    version) run "p$c" LD_LIBRARY_PATH=$pth "$bin" --version ;;
    ppl) run "p$c" LD_LIBRARY_PATH=$pth "$bin" ppl "$models/stories260K.gguf" "$work/t.txt" ;;
    esac
    if [ "$rc" -eq 0 ]; then ok; else bad "$c under the pthread build: exit $rc: $(cat "$work/p$c.err")"; fi
    n=$(nwarn "p$c")
    if [ "$n" -eq 1 ] && grep -q "$want" "$work/p$c.err"; then ok; else
        bad "$c under the pthread build: $n warning lines, expected one matching '$want': $(cat "$work/p$c.err")"; fi
done
if grep -q "^blas library: $pth/.* (pthreads build)\$" "$work/pversion.out"; then ok; else
    bad "--version under the pthread build: $(grep '^blas' "$work/pversion.out")"; fi
if grep -q '^perplexity ' "$work/pppl.out"; then ok; else bad "ppl under the pthread build printed no perplexity"; fi

# silenced on request; not needed with one thread
run quiet LD_LIBRARY_PATH=$pth LAYERMAP_NO_BLAS_WARNING=1 "$bin" --version
if [ "$rc" -eq 0 ] && [ "$(nwarn quiet)" -eq 0 ]; then ok; else bad "LAYERMAP_NO_BLAS_WARNING=1: $(cat "$work/quiet.err")"; fi
run one LD_LIBRARY_PATH=$pth OMP_NUM_THREADS=1 "$bin" --version
if [ "$rc" -eq 0 ] && [ "$(nwarn one)" -eq 0 ]; then ok; else bad "one OpenMP thread: $(cat "$work/one.err")"; fi
finish
