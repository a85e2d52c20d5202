#!/bin/sh
# test_mpi.sh (make test-mpi) -- attribute and ppl over MPI ranks (cli/mpi.c,
# lm_attr_dist in src/method/attribute.c) against one process, on stories260K:
#
#  - the default build has no MPI: no MPI_ symbol wanted, no libmpi linked;
#  - mpirun -np 1, 2, 3 of the MPI build (make MPI=1): every matrix and its
#    standard errors equal the one-process run's within 1e-9 relative
#    (tests/cli/mpi_cmp.py says why that bound), the sample count and the
#    split-half correlation equal, for
#      six methods of one shared pass (grad-weight, grad-weight-signed, fisher,
#      grad-norm, act-grad, act-stats: one lm_attribute_many call), also with
#      --batch 3 (samples of 3 sequences, the last one short),
#      ablate-mean (means summed between its two passes), ig and ablate in one
#      call, and a CSV of grad-weight;
#    16 sequences on 3 ranks is 6/5/5; 1 sequence on 3 ranks leaves 2 idle;
#  - ppl: the same token counts and NLL (as printed: 6 decimals);
#  - failures end every rank, non-zero, within a timeout, with one line naming
#    the problem: a missing model (all ranks), bad data on rank 1 only, other
#    data on rank 1 only ("rank 1 of 2: ..."), a checkpoint of another run;
#  - checkpoints (on by default): a run of a shared pass and ablate-mean's two
#    passes interrupted on 2 ranks (SIGTERM raised at a known sample by the
#    test hook LM_TEST_STOP_AFTER, cli/cmd_attribute.c: no timing) ends every
#    rank non-zero within the timeout, rank 0 having written the reduced sums;
#    resumed on 1 rank and, from the same file, on 3: each equal to one
#    uninterrupted process within 1e-9; interrupted on 3, then on 2, finished
#    on 1; SIGTERM to one rank only (the others stop at the same round) and
#    to mpirun itself (rank 1 waits at a known sample for it); each resumed
#    equal;
#  - --until-stable on 2 and 3 ranks stops at the sample one process stops at
#    (same samples, split-half, matrices within 1e-9), also interrupted on 3
#    ranks and resumed on 2;
#  - two ranks in two network namespaces joined by a veth pair (10.77.0.1/2),
#    mpirun started in the first with a launcher that enters the other's
#    namespace instead of ssh (plm_rsh_agent), over the TCP BTL only: the same
#    matrices, and each rank ran in its own namespace. Skipped, saying why,
#    where namespaces cannot be made (not root, no ip, no veth).
# Without mpicc/mpirun or the MPI build this prints SKIPPED and exits 0, unless
# LM_REQUIRE_MPI=1 (.ci/run), then it fails. Prints "RESULT test_mpi.sh PASSED
# FAILED". Run from the repository root: make test-mpi.
set -u
cd "$(dirname "$0")/../.." || exit 2
bin=${LM_BIN:-build/layermap}
mbin=${LM_MPI_BIN:-build-mpi/layermap}
models=${LM_MODELS:-../shared/models}
model=$models/stories260K.gguf
data=data/calib.txt
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL test_mpi.sh: $*" >&2; }
finish() { echo "RESULT test_mpi.sh $pass $fail"; [ "$fail" -eq 0 ]; exit $?; }
skip() {
    if [ "${LM_REQUIRE_MPI:-0}" = 1 ]; then bad "$* (LM_REQUIRE_MPI=1)"; finish; fi
    echo "test_mpi.sh: SKIPPED: $*"
    finish
}

[ -x "$bin" ] || { bad "$bin missing: build it first"; finish; }
[ -f "$model" ] || { bad "$model missing (the shared test models)"; finish; }
model=$(cd "$(dirname "$model")" && pwd)/$(basename "$model") # absolute: the namespaces' ranks start elsewhere

# the default build: MPI-free
if nm -u "$bin" 2>/dev/null | grep -q 'MPI_'; then bad "$bin wants MPI symbols"; else ok; fi
if ldd "$bin" 2>/dev/null | grep -q 'libmpi'; then bad "$bin links libmpi"; else ok; fi

command -v mpirun >/dev/null 2>&1 && command -v mpicc >/dev/null 2>&1 ||
    skip "no mpirun/mpicc (Open MPI: scripts/deps.sh mpi installs openmpi-bin libopenmpi-dev)"
[ -x "$mbin" ] || skip "$mbin missing (make MPI=1)"
if nm -u "$mbin" | grep -q 'MPI_Allreduce'; then ok; else bad "$mbin has no MPI in it"; fi

work=$(mktemp -d "${TMPDIR:-/tmp}/layermap-mpi-XXXXXX") || exit 1
nsa="" nsb=""
cleanup() {
    [ -n "$nsa" ] && ip netns del "$nsa" 2>/dev/null
    [ -n "$nsb" ] && ip netns del "$nsb" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
# root in a container: Open MPI wants this said; oversubscribe: 3 ranks on 2 cores
OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 LM_PROGRESS=0 OMP_NUM_THREADS=1
export OMPI_ALLOW_RUN_AS_ROOT OMPI_ALLOW_RUN_AS_ROOT_CONFIRM LM_PROGRESS OMP_NUM_THREADS
mpi() { # mpi NP TIMEOUT ARGS...: the MPI build under mpirun on this host
    np=$1 lim=$2
    shift 2
    timeout -k 5 "$lim" mpirun --oversubscribe --bind-to none --mca btl self,vader,tcp \
        --mca btl_vader_single_copy_mechanism none -np "$np" "$@"
}
cmp_json() { # cmp_json [--exact] NAME REF GOT RANKS
    exact=
    [ "$1" = --exact ] && { exact=--exact; shift; }
    if python3 tests/cli/mpi_cmp.py $exact "$2" "$3" "$4" >"$work/cmp.log" 2>&1; then
        ok
    else
        bad "$1: the $4-rank matrices differ from one process's:"
        sed 's/^/    /' "$work/cmp.log" >&2
    fi
}

# ---- the same numbers --------------------------------------------------------
set1="grad-weight,grad-weight-signed,fisher,grad-norm,act-grad,act-stats"
common="--seq-len 64 --max-tokens 1024 -t 1 --quiet"
own="--seq-len 32 --max-tokens 256 --steps 2 -t 1 --quiet"
run_case() { # run_case NAME ONE-PROCESS-ARGS... (the JSON goes to $work/NAME-NP.json)
    name=$1
    shift
    if ! timeout 300 "$bin" attribute "$model" --data "$data" "$@" --json "$work/$name-ref.json" 2>"$work/err"; then
        bad "$name: one process failed: $(tail -1 "$work/err")"
        return
    fi
    for np in 1 2 3; do
        if mpi "$np" 300 "$mbin" attribute "$model" --data "$data" "$@" --json "$work/$name-$np.json" \
            >"$work/out" 2>"$work/err"; then
            cmp_json "$name" "$work/$name-ref.json" "$work/$name-$np.json" "$np"
        else
            bad "$name: mpirun -np $np failed: $(tail -3 "$work/err")"
        fi
    done
}
run_case shared -m "$set1" $common
run_case batch3 -m "$set1" $common --batch 3
run_case own -m ablate-mean,ig,ablate $own
# one sequence, three ranks: two have nothing to do
run_case idle -m grad-weight,ablate-mean --seq-len 200 --max-tokens 200 -t 1 --quiet

# a CSV, as written
if "$bin" attribute "$model" --data "$data" $common -m grad-weight --csv "$work/gw-ref.csv" 2>/dev/null &&
    mpi 2 120 "$mbin" attribute "$model" --data "$data" $common -m grad-weight --csv "$work/gw-2.csv" 2>"$work/err" &&
    python3 - "$work/gw-ref.csv" "$work/gw-2.csv" <<'EOF'; then ok; else bad "grad-weight CSV of 2 ranks differs: $(tail -2 "$work/err")"; fi
import csv, sys
rows = [list(csv.reader(open(p))) for p in sys.argv[1:]]
assert len(rows[0]) == len(rows[1]) > 1 and rows[0][0] == rows[1][0], "shape or header"
n = 0
for a, b in zip(rows[0][1:], rows[1][1:]):
    for x, y in zip(a, b):
        try:
            fx, fy = float(x), float(y)
        except ValueError:
            assert x == y, (x, y)
            continue
        assert abs(fx - fy) <= 1e-9 * max(abs(fx), abs(fy)), (x, y)
        n += 1
assert n >= 35, n
EOF

# ---- ppl -------------------------------------------------------------------
ppl_line() { sed -n "s|^$1 *||p" "$2"; }
if "$bin" ppl "$model" "$data" --seq-len 64 --max-tokens 1024 -t 1 >"$work/ppl-ref" 2>/dev/null; then
    for np in 1 2 3; do
        if mpi "$np" 120 "$mbin" ppl "$model" "$data" --seq-len 64 --max-tokens 1024 -t 1 >"$work/ppl-$np" 2>"$work/err"; then
            a=$(ppl_line nll/token "$work/ppl-ref") b=$(ppl_line nll/token "$work/ppl-$np")
            ta=$(ppl_line tokens "$work/ppl-ref") tb=$(ppl_line tokens "$work/ppl-$np")
            # printed with 6 decimals: equal up to the last one's rounding
            if [ -n "$a" ] && [ "$ta" = "$tb" ] && awk -v a="$a" -v b="$b" 'BEGIN { d = a - b; exit !(d <= 1e-6 && d >= -1e-6) }'; then
                ok
            else
                bad "ppl -np $np: '$b' '$tb' vs one process '$a' '$ta'"
            fi
        else
            bad "ppl: mpirun -np $np failed: $(tail -2 "$work/err")"
        fi
    done
else
    bad "ppl: one process failed"
fi

# ---- failures end every rank -------------------------------------------------
# expect_fail NAME PATTERN NP ARGS...: non-zero, within 60 s, PATTERN in exactly one line of stderr
expect_fail() {
    name=$1 pat=$2 np=$3
    shift 3
    mpi "$np" 60 "$@" >"$work/out" 2>"$work/err"
    rc=$?
    n=$(grep -c -- "$pat" "$work/err")
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        bad "$name: still running after 60 s (a rank hangs)"
    elif [ "$rc" -eq 0 ]; then
        bad "$name: exit 0"
    elif [ "$n" -ne 1 ]; then
        bad "$name: '$pat' on $n lines of stderr, not 1:"
        sed 's/^/    /' "$work/err" >&2
    else
        ok
    fi
}
expect_fail missing-model "$work/none.gguf" 2 "$mbin" attribute "$work/none.gguf" --data "$data" $common
printf '{"text": "fine"}\n{"text": \n' >"$work/bad.jsonl"
tail -c 6000 "$data" >"$work/other.txt" # other tokens
cat >"$work/rank.sh" <<EOF
#!/bin/sh
# rank 1 reads \$1, the others $data; each writes its pid first
echo \$\$ >"$work/pid.\$OMPI_COMM_WORLD_RANK"
d=$data
[ "\$OMPI_COMM_WORLD_RANK" = 1 ] && d=\$1
shift
exec "$PWD/$mbin" attribute "$model" --data "\$d" "\$@"
EOF
chmod +x "$work/rank.sh"
expect_fail bad-data-rank1 "rank 1 of 2: $work/bad.jsonl" 2 "$work/rank.sh" "$work/bad.jsonl" $common
expect_fail other-data-rank1 "rank 1 of 2: $work/other.txt: other data here than on rank 0" 2 \
    "$work/rank.sh" "$work/other.txt" $common
# a checkpoint of another run (here of another method) is refused on every rank
"$bin" attribute "$model" --data "$data" $common -m fisher --checkpoint "$work/other.ckpt" >/dev/null 2>&1
expect_fail foreign-checkpoint "$work/other.ckpt: checkpoint is for method fisher, not grad-weight" 2 \
    "$mbin" attribute "$model" --data "$data" $common -m grad-weight --checkpoint "$work/other.ckpt"
expect_fail inspect-under-mpi "runs as one process" 2 "$mbin" inspect "$model"

# ---- diff: the tensors shared among the ranks -----------------------------------
# Each (layer, module) is computed whole by one rank, so the matrices equal
# one process's bit for bit (--exact); the overlap of two fine-tunes too (a
# Q8_0 copy of the base as the second: other values, the same shapes).
ft=$models/stories260K-ft.gguf ft8=$models/stories260K-q8_0.gguf
ft=$(cd "$(dirname "$ft")" && pwd)/$(basename "$ft") ft8=$(cd "$(dirname "$ft8")" && pwd)/$(basename "$ft8")
"$bin" diff "$model" "$ft" -m all -q --json "$work/diff-ref.json" 2>"$work/err" ||
    bad "diff: one process failed: $(tail -1 "$work/err")"
"$bin" diff "$model" "$ft" "$ft8" -m all -q --json "$work/ov-ref.json" 2>"$work/err" ||
    bad "diff overlap: one process failed: $(tail -1 "$work/err")"
for np in 2 3; do
    if mpi "$np" 120 "$mbin" diff "$model" "$ft" -m all -q -t 1 --json "$work/diff-$np.json" >"$work/out" 2>"$work/err"; then
        for k in rel density cosine rank; do
            cmp_json --exact "diff $k" "$work/diff-ref-$k.json" "$work/diff-$np-$k.json" "$np"
        done
    else
        bad "diff: mpirun -np $np failed: $(tail -3 "$work/err")"
    fi
    if mpi "$np" 120 "$mbin" diff "$model" "$ft" "$ft8" -m all -q -t 1 --json "$work/ov-$np.json" >"$work/out" \
        2>"$work/err"; then
        for k in jaccard overlap density-a density-b; do
            cmp_json --exact "diff overlap $k" "$work/ov-ref-1v2-$k.json" "$work/ov-$np-1v2-$k.json" "$np"
        done
    else
        bad "diff overlap: mpirun -np $np failed: $(tail -3 "$work/err")"
    fi
done
# more ranks than tensors (--layers 0: 7 tensors, 9 ranks; two idle)
if mpi 9 120 "$mbin" diff "$model" "$ft" --layers 0 -q -t 1 --json "$work/diff-9.json" >"$work/out" 2>"$work/err" &&
    "$bin" diff "$model" "$ft" --layers 0 -q -t 1 --json "$work/diff-l0.json" 2>"$work/err1"; then
    cmp_json --exact "diff, 9 ranks" "$work/diff-l0.json" "$work/diff-9.json" 9
else
    bad "diff on 9 ranks: $(tail -3 "$work/err") $(tail -1 "$work/err1")"
fi
# a rank that opened another model than rank 0: one message, every rank non-zero, no hang
cat >"$work/other1.sh" <<EOF
#!/bin/sh
[ "\$OMPI_COMM_WORLD_RANK" = 1 ] && exec "$PWD/$mbin" diff "$model" "$ft8" -q --json "$work/x.json"
exec "$PWD/$mbin" "\$@"
EOF
chmod +x "$work/other1.sh"
expect_fail diff-other-model "another model here than on rank 0" 2 "$work/other1.sh" diff "$model" "$ft" -q \
    --json "$work/x.json"
if [ -e "$work/x.json" ]; then bad "diff-other-model: an output was written"; else ok; fi

# ---- checkpoints: interrupted on some ranks, resumed on others -------------------
cka="-m grad-weight,fisher,act-stats,ablate-mean $common"
"$bin" attribute "$model" --data "$data" $cka --json "$work/ck-ref.json" 2>"$work/err" ||
    bad "checkpoints: one process failed: $(tail -1 "$work/err")"
ckf=$work/ck.json.ckpt
# interrupted NAME NP MPIRUN-ARGS... BINARY: the run ends non-zero (not by the
# timeout) with its checkpoint there and no output
interrupted() {
    name=$1 np=$2
    shift 2
    rm -f "$work/ck.json"
    mpi "$np" 120 "$@" attribute "$model" --data "$data" $cka --json "$work/ck.json" >"$work/out" 2>"$work/err"
    rc=$?
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        bad "$name: still running after 120 s (a rank hangs)"
    elif [ "$rc" -eq 0 ] || [ ! -s "$ckf" ] || [ -e "$work/ck.json" ]; then
        bad "$name: exit $rc, checkpoint $(ls "$ckf" 2>&1), output $(ls "$work/ck.json" 2>&1): $(tail -3 "$work/err")"
    else
        ok
    fi
}
# resumed NAME NP: the same command on NP ranks resumes and finishes equal to
# one process, the default checkpoint removed
resumed() {
    name=$1 np=$2
    if mpi "$np" 120 "$mbin" attribute "$model" --data "$data" $cka --json "$work/ck.json" >"$work/out" 2>"$work/err" &&
        grep -q "resuming from $ckf: " "$work/err"; then
        cmp_json "$name" "$work/ck-ref.json" "$work/ck.json" "$np"
        if [ -e "$ckf" ]; then bad "$name: the default checkpoint is still there"; else ok; fi
    else
        bad "$name: mpirun -np $np failed or did not resume: $(tail -3 "$work/err")"
    fi
}
rm -f "$ckf"
interrupted stop-2 2 -x LM_TEST_STOP_AFTER=5 "$mbin"
if grep -q "interrupted (Terminated): .*the sums so far are in $ckf; to continue, run the same command again" "$work/err"; then
    ok
else
    bad "interrupted on 2 ranks: rank 0's message: $(cat "$work/err")"
fi
cp "$ckf" "$work/ck.keep"
resumed resume-2-on-1 1
cp "$work/ck.keep" "$ckf"
resumed resume-2-on-3 3
# three runs: interrupted on 3 ranks, then on 2, finished on 1
interrupted stop-3 3 -x LM_TEST_STOP_AFTER=3 "$mbin"
interrupted stop-3-then-2 2 -x LM_TEST_STOP_AFTER=3 "$mbin"
resumed resume-3-2-on-1 1
# SIGTERM to one rank only: the others stop at the same round
cat >"$work/stop1.sh" <<EOF
#!/bin/sh
[ "\$OMPI_COMM_WORLD_RANK" = 1 ] && export LM_TEST_STOP_AFTER=4
exec "$PWD/$mbin" "\$@"
EOF
chmod +x "$work/stop1.sh"
interrupted sigterm-rank1 2 "$work/stop1.sh"
if grep -q "interrupted (on another rank): attribute: canceled by another process" "$work/err"; then
    ok
else
    bad "SIGTERM to rank 1: rank 0's message: $(cat "$work/err")"
fi
resumed resume-after-rank1 3
# SIGTERM to mpirun: rank 1 waits at its 4th sample for it (the hook's LM_TEST_STOP_WAIT)
cat >"$work/wait1.sh" <<EOF
#!/bin/sh
[ "\$OMPI_COMM_WORLD_RANK" = 1 ] && export LM_TEST_STOP_AFTER=4 LM_TEST_STOP_WAIT="$work/waiting"
exec "$PWD/$mbin" "\$@"
EOF
chmod +x "$work/wait1.sh"
rm -f "$work/waiting" "$work/ck.json"
# Signalled is mpirun alone ($! is mpirun: not under timeout, which hands a
# signal to its whole process group, the ranks too; a watchdog ends it after
# 150 s). mpirun hands a SIGTERM on to the ranks odls_base_sigkill_timeout
# seconds later and sends SIGKILL as long after that: 1 s by default, which a
# loaded host can miss (the last round, the reduction, the checkpoint's fsync),
# so 5 s here, as docs/CLUSTER.md advises more for real jobs.
mpirun --mca odls_base_sigkill_timeout 5 --oversubscribe --bind-to none \
    --mca btl self,vader,tcp --mca btl_vader_single_copy_mechanism none -np 2 "$work/wait1.sh" \
    attribute "$model" --data "$data" $cka --json "$work/ck.json" >"$work/out" 2>"$work/err" &
job=$!
(n=0; while [ $n -lt 150 ] && kill -0 $job 2>/dev/null; do sleep 1; n=$((n + 1)); done
    kill -KILL $job 2>/dev/null) &
dog=$!
i=0 # waits for the event (rank 1 at its 4th sample), for at most 120 s
while [ ! -e "$work/waiting" ] && [ $i -lt 1200 ] && kill -0 $job 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
kill -TERM $job 2>/dev/null
wait $job
rc=$?
wait $dog
if [ -e "$work/waiting" ] && [ "$rc" -ne 0 ] && [ "$rc" -ne 137 ] && [ -s "$ckf" ] && [ ! -e "$work/ck.json" ]; then
    ok
else
    bad "SIGTERM to mpirun: exit $rc, checkpoint $(ls "$ckf" 2>&1): $(tail -3 "$work/err")"
fi
resumed resume-after-mpirun 2

# ---- --until-stable over ranks -----------------------------------------------------
usa="-m grad-weight,fisher,wanda --seq-len 32 --max-tokens 2048 -t 1 --quiet --until-stable 0.9"
if "$bin" attribute "$model" --data "$data" $usa --json "$work/us-ref.json" 2>"$work/err" &&
    grep -q "13 samples.*stopped, stable" "$work/err"; then
    ok
else
    bad "until-stable: one process did not stop early: $(tail -3 "$work/err")"
fi
for np in 2 3; do
    if mpi "$np" 120 "$mbin" attribute "$model" --data "$data" $usa --json "$work/us-$np.json" >"$work/out" 2>"$work/err" &&
        grep -q "13 samples.*stopped, stable" "$work/err"; then
        cmp_json "until-stable" "$work/us-ref.json" "$work/us-$np.json" "$np"
    else
        bad "until-stable: mpirun -np $np failed or did not stop as one process: $(tail -3 "$work/err")"
    fi
done
rm -f "$work/us.json.ckpt"
mpi 3 120 -x LM_TEST_STOP_AFTER=2 "$mbin" attribute "$model" --data "$data" $usa --json "$work/us.json" >/dev/null 2>&1
if [ -s "$work/us.json.ckpt" ] &&
    mpi 2 120 "$mbin" attribute "$model" --data "$data" $usa --json "$work/us.json" >"$work/out" 2>"$work/err" &&
    grep -q "resuming from $work/us.json.ckpt: 6 of 64 sequences done" "$work/err"; then
    cmp_json "until-stable resumed" "$work/us-ref.json" "$work/us.json" 2
else
    bad "until-stable: interrupted on 3 ranks, resumed on 2: $(tail -3 "$work/err")"
fi

# ---- two namespaces over TCP ---------------------------------------------------
ns_skip=""
if [ "$(id -u)" -ne 0 ]; then
    ns_skip="not root: network namespaces need CAP_SYS_ADMIN"
elif ! command -v ip >/dev/null 2>&1; then
    ns_skip="no ip command (iproute2)"
else
    nsa=lmmpiA$$ nsb=lmmpiB$$ veth=lmv$$
    if ! { ip netns add "$nsa" && ip netns add "$nsb"; } 2>"$work/nserr"; then
        ns_skip="ip netns add failed: $(head -1 "$work/nserr")"
    elif ! { ip link add "$veth" netns "$nsa" type veth peer name "$veth" netns "$nsb" &&
        ip -n "$nsa" addr add 10.77.0.1/24 dev "$veth" && ip -n "$nsb" addr add 10.77.0.2/24 dev "$veth" &&
        ip -n "$nsa" link set "$veth" up && ip -n "$nsb" link set "$veth" up &&
        ip -n "$nsa" link set lo up && ip -n "$nsb" link set lo up; } 2>"$work/nserr"; then
        ns_skip="cannot make the veth pair: $(head -1 "$work/nserr")"
    fi
fi
if [ -n "$ns_skip" ]; then
    # loud, but not a failure even under LM_REQUIRE_MPI=1: a container may lack CAP_NET_ADMIN
    echo "test_mpi.sh: namespaces: SKIPPED: $ns_skip"
else
    # the launcher: tests/cli/netns_agent.sh, each host address to its namespace
    LM_NETNS_MAP="10.77.0.1=$nsa 10.77.0.2=$nsb"
    export LM_NETNS_MAP
    cat >"$work/where.sh" <<EOF
#!/bin/sh
# each rank notes the namespace it runs in
echo "\$OMPI_COMM_WORLD_RANK \$(ip netns identify \$\$)" >"$work/where.\$OMPI_COMM_WORLD_RANK"
exec "\$@"
EOF
    chmod +x "$work/where.sh"
    printf '10.77.0.1 slots=1\n10.77.0.2 slots=1\n' >"$work/hosts"
    if timeout -k 5 120 ip netns exec "$nsa" mpirun --hostfile "$work/hosts" -np 2 --bind-to none \
        --mca plm_rsh_agent "$PWD/tests/cli/netns_agent.sh" --mca btl tcp,self --mca btl_tcp_if_include "$veth" \
        --mca oob_tcp_if_include "$veth" \
        -x OMP_NUM_THREADS -x LM_PROGRESS "$work/where.sh" "$PWD/$mbin" attribute "$model" \
        --data "$PWD/$data" -m "$set1" $common --json "$work/ns.json" >"$work/out" 2>"$work/err"; then
        cmp_json namespaces "$work/shared-ref.json" "$work/ns.json" 2
        w0=$(cat "$work/where.0" 2>/dev/null) w1=$(cat "$work/where.1" 2>/dev/null)
        if [ "$w0" = "0 $nsa" ] && [ "$w1" = "1 $nsb" ]; then ok; else bad "namespaces: ranks ran in '$w0' / '$w1'"; fi
    else
        bad "namespaces: mpirun over the veth pair failed:"
        sed 's/^/    /' "$work/err" >&2
    fi
fi
finish
