#!/bin/sh
# The numeric tests under every OpenBLAS core this CPU can execute.
#
#   tests/cores.sh [BUILD] [all]    (make test-cores; part of make check)
#
# Results must not depend on which correct kernel (summation order, vector
# width) OpenBLAS picks: CI hosts differ (Intel and AMD, with and without
# AVX-512), and OpenBLAS's own detection and the CLI's choice can differ. Each
# core is forced with OPENBLAS_CORETYPE and confirmed from OpenBLAS's own
# report (OPENBLAS_VERBOSE=2), so a core this build silently replaces is
# reported, not counted as tested. Cores whose instructions the CPU lacks are
# skipped and listed (running them would die with SIGILL). The SSE-only cores
# (Prescott, Core2, Nehalem: CPUs before 2011) run only with `all`: their
# products are 4-8x slower and would double CI's time, and no machine this
# project runs on (AVX2 or AVX-512) selects them.
build=${1:-build}
scope=${2:-}
cd "$(dirname "$0")/.." || exit 2
flags=$(grep -m 1 '^flags' /proc/cpuinfo 2>/dev/null)
has() { for f in "$@"; do case " $flags " in *" $f "*) ;; *) return 1 ;; esac; done; }
# core : the instructions its kernels need (OpenBLAS kernel/x86_64/KERNEL.*)
cores="Sandybridge:avx Haswell:avx2,fma Zen:avx2,fma
SkylakeX:avx512f,avx512bw,avx512vl,avx512dq Cooperlake:avx512f,avx512bw,avx512vl,avx512dq,avx512_bf16"
[ "$scope" = all ] && cores="Prescott:sse3 Core2:ssse3 Nehalem:sse4_2 $cores"
# the tests whose numbers pass through BLAS products
tests="test_kernels test_engine test_diff test_real"
: "${OMP_WAIT_POLICY:=passive}"; export OMP_WAIT_POLICY
pass=0; fail=0; ran=""; skipped=""
# make check has just run every test under the CLI's core (tests/run.sh):
# LM_CORES_SKIP=CORE leaves that one out here
for entry in $cores; do
    core=${entry%%:*}
    if [ -n "${LM_CORES_SKIP:-}" ] && [ "$core" = "$LM_CORES_SKIP" ]; then
        skipped="$skipped $core(run-by-make-test)"; continue
    fi
    need=$(echo "${entry#*:}" | tr ',' ' ')
    # shellcheck disable=SC2086
    if [ "$(uname -m)" != x86_64 ] || [ -z "$flags" ] || ! has $need; then
        skipped="$skipped $core"; continue
    fi
    got=$(OPENBLAS_CORETYPE=$core OPENBLAS_VERBOSE=2 "$build/tests/test_kernels" 2>&1 >/dev/null |
          sed -n 's/^Core: \(.*\)$/\1/p' | head -n 1)
    if [ "$got" != "$core" ]; then
        skipped="$skipped $core(this-OpenBLAS-runs-${got:-?})"; continue
    fi
    ran="$ran $core"
    for t in $tests; do
        [ -x "$build/tests/$t" ] || { echo "cores: $build/tests/$t missing (make first)"; fail=$((fail + 1)); continue; }
        out=$(OPENBLAS_CORETYPE=$core LM_TEST_BLAS_ONLY=1 "$build/tests/$t" 2>&1); rc=$?
        line=$(printf '%s\n' "$out" | grep '^RESULT ' | tail -n 1)
        if [ -z "$line" ]; then
            echo "cores: $core $t: crashed or printed no result (exit $rc)"
            printf '%s\n' "$out" | tail -n 20
            fail=$((fail + 1)); continue
        fi
        set -- $line
        printf '%s\n' "$out" | grep -E '^FAIL' | sed "s/^/cores: $core: /" | head -n 20
        echo "cores: $core $t: $3 passed, $4 failed"
        pass=$((pass + $3)); fail=$((fail + $4))
        [ "$rc" -ne 0 ] && [ "$4" -eq 0 ] && fail=$((fail + 1))
    done
done
echo "cores: ran under:$ran; not runnable here:${skipped:- none}"
[ -n "$ran" ] || { echo "cores: no core could be forced"; fail=$((fail + 1)); }
echo "cores: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
