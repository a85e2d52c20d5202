#!/bin/sh
# Run every test binary in $1/tests; print each file's result and the total
# as "N passed, N failed". Exit non-zero when any check or binary failed.
build=${1:-build}
# OpenMP threads that spin while waiting slow everything down 10x on a busy
# machine (the CLI sets the same for itself; see cli/main.c)
: "${OMP_WAIT_POLICY:=passive}"; export OMP_WAIT_POLICY
# The same BLAS core the CLI runs (it re-executes itself with the core this CPU
# supports best, cli/main.c); tests/cores.sh runs the numeric tests under every
# other core this CPU can execute. A core chosen by the caller is kept.
if [ -z "${OPENBLAS_CORETYPE:-}" ] && [ -n "${LM_BIN:-}" ] && [ -x "$LM_BIN" ]; then
    core=$("$LM_BIN" --version 2>/dev/null | sed -n 's/.*, core \([A-Za-z0-9]*\).*/\1/p' | head -n 1)
    if [ -n "$core" ]; then OPENBLAS_CORETYPE=$core; export OPENBLAS_CORETYPE; fi
fi
echo "tests: OpenBLAS core ${OPENBLAS_CORETYPE:-(OpenBLAS's own choice)}"
pass=0; fail=0; broken=""
for t in "$build"/tests/test_*; do
    [ -x "$t" ] || continue
    out=$("$t" 2>&1); rc=$?
    line=$(printf '%s\n' "$out" | grep '^RESULT ' | tail -n 1)
    printf '%s\n' "$out" | grep -v '^RESULT ' | grep -E 'FAIL|ERROR|Sanitizer|runtime error' | head -n 40
    if [ -z "$line" ]; then
        echo "$(basename "$t"): crashed or printed no result (exit $rc)"
        printf '%s\n' "$out" | tail -n 20
        fail=$((fail + 1)); broken="$broken $(basename "$t")"; continue
    fi
    set -- $line
    echo "$2: $3 passed, $4 failed"
    pass=$((pass + $3)); fail=$((fail + $4))
    if [ "$rc" -ne 0 ] && [ "$4" -eq 0 ]; then fail=$((fail + 1)); broken="$broken $2"; fi
done
[ -n "$broken" ] && echo "broken:$broken"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
