#!/bin/sh
# Run every test binary in $1/tests; print each file's result and the total
# as "N passed, N failed". Exit non-zero when any check or binary failed.
build=${1:-build}
# OpenMP threads that spin while waiting slow everything down 10x on a busy
# machine (the CLI sets the same for itself; see cli/main.c)
: "${OMP_WAIT_POLICY:=passive}"; export OMP_WAIT_POLICY
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
