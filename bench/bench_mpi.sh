#!/bin/sh
# bench_mpi.sh -- data parallelism over MPI ranks: `attribute -m grad-weight`
# on SmolLM2-135M (Q4_1), sequences of 256 tokens, N tokens of data/calib.txt,
# one thread per rank, three cases run alternately, best of RUNS:
#   1 rank            mpirun -np 1, bound to core 0
#   2 ranks           mpirun -np 2 --bind-to core: one core each, shared memory
#   2 ranks, 2 hosts  the ranks in two network namespaces joined by a veth pair,
#                     over the TCP transport only, each pinned to its own core
#                     (taskset): the path of two machines (as tests/cli/test_mpi.sh;
#                     needs root and iproute2, else skipped, saying why)
# Reports the CLI's own time of the attribution (after loading), the wall time
# of the whole mpirun (start-up and loading included), the speed-up and the
# parallel efficiency (speed-up / 2), the two-rank matrices against the one
# rank's (tests/cli/mpi_cmp.py: within 1e-9), and what the ranks communicated
# (`-v`: the reductions, their doubles and the seconds rank 0 spent in them,
# waits for the slower rank included).
#
# Then a projection for P nodes of one rank each (8, 64, 512), from the
# measured time per sample and communication: T(P) = ceil(n / P) t_s +
# R(P) (2 log2(P) alpha + 2 bytes / beta), R(P) = ceil(n / P) + 1 reductions
# (one of a few flags per round, one of the sums at the end; a checkpoint adds
# one of the sums per minute, negligible), a reduce then a broadcast along a
# binomial tree; efficiency = (n t_s / P) / T(P). alpha and beta are those of a
# 10 GbE cluster (50 us per message, 1.25 GB/s), stated, not measured; the
# namespaces' measured time per reduction is printed beside them. For this
# bench's data and for the seeds' job: a 14B model, 50k tokens in samples of
# 512 (98 samples), t_s = 512 / T14 s (T14 tokens/s of one node: default
# 1.7, what bench/bench_14b.sh measures in F32 on this 2-core machine).
#
#   bench/bench_mpi.sh [N_TOKENS]     default 2048
#
# Environment: MODEL (default $LAYERMAP_CACHE/SmolLM2-135M-Instruct.Q4_1.gguf),
# DATA (data/calib.txt), RUNS (3), LAYERMAP (build-mpi/layermap: make MPI=1),
# OUTDIR (bench/.cache/mpi), NETNS (1; 0 skips the namespaces), T14 (1.7).
set -eu
cd "$(dirname "$0")/.."
N=${1:-2048}
CACHE=${LAYERMAP_CACHE:-$HOME/.cache/layermap}
MODEL=${MODEL:-$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf}
DATA=${DATA:-data/calib.txt}
RUNS=${RUNS:-3}
LM=${LAYERMAP:-build-mpi/layermap}
OUTDIR=${OUTDIR:-bench/.cache/mpi}
NETNS=${NETNS:-1}
T14=${T14:-1.7}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
die() { echo "bench_mpi: $*" >&2; exit 1; }
command -v mpirun >/dev/null 2>&1 || die "no mpirun (scripts/deps.sh mpi)"
[ -x "$LM" ] || die "$LM: not built (make MPI=1)"
[ -f "$MODEL" ] || die "$MODEL: not found (scripts/fetch_models.sh)"
MODEL=$(cd "$(dirname "$MODEL")" && pwd)/$(basename "$MODEL")
DATA=$(cd "$(dirname "$DATA")" && pwd)/$(basename "$DATA")
LMABS=$(cd "$(dirname "$LM")" && pwd)/$(basename "$LM")
OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 LM_PROGRESS=0
export OMPI_ALLOW_RUN_AS_ROOT OMPI_ALLOW_RUN_AS_ROOT_CONFIRM OMP_NUM_THREADS LM_PROGRESS
args="attribute $MODEL --data $DATA -m grad-weight --seq-len 256 --max-tokens $N --threads 1 -v --no-checkpoint"

# ---- the namespaces (torn down on exit) ------------------------------------------
ns_skip=""
nsa=lmbenchA$$ nsb=lmbenchB$$ veth=lmbv$$
cleanup() { ip netns del "$nsa" 2>/dev/null || true; ip netns del "$nsb" 2>/dev/null || true; }
if [ "$NETNS" != 1 ]; then
    ns_skip="NETNS=$NETNS"
elif [ "$(id -u)" -ne 0 ]; then
    ns_skip="not root"
elif ! command -v ip >/dev/null 2>&1 || ! command -v taskset >/dev/null 2>&1; then
    ns_skip="no ip (iproute2) or taskset (util-linux)"
else
    trap cleanup EXIT
    if ! { ip netns add "$nsa" && ip netns add "$nsb" &&
        ip link add "$veth" netns "$nsa" type veth peer name "$veth" netns "$nsb" &&
        ip -n "$nsa" addr add 10.78.0.1/24 dev "$veth" && ip -n "$nsb" addr add 10.78.0.2/24 dev "$veth" &&
        ip -n "$nsa" link set "$veth" up && ip -n "$nsb" link set "$veth" up &&
        ip -n "$nsa" link set lo up && ip -n "$nsb" link set lo up; } 2>"$OUTDIR/nserr"; then
        ns_skip="cannot make the namespaces: $(head -1 "$OUTDIR/nserr")"
    fi
fi
if [ -z "$ns_skip" ]; then
    # the launcher: tests/cli/netns_agent.sh, each host address to its namespace
    LM_NETNS_MAP="10.78.0.1=$nsa 10.78.0.2=$nsb"
    export LM_NETNS_MAP
    cat >"$OUTDIR/pin.sh" <<'EOF'
#!/bin/sh
# rank r on core r: two "machines" of one core each
exec taskset -c "$OMPI_COMM_WORLD_RANK" "$@"
EOF
    chmod +x "$OUTDIR/pin.sh"
    printf '10.78.0.1 slots=1\n10.78.0.2 slots=1\n' >"$OUTDIR/hosts"
fi

# run CASE: one mpirun; its log in $OUTDIR/CASE.$r.log, its wall seconds in $OUTDIR/CASE.$r.wall
run() {
    t0=$(date +%s.%N)
    case $1 in
    np1 | np2)
        # shellcheck disable=SC2086
        env -u OPENBLAS_CORETYPE mpirun --bind-to core -np "${1#np}" "$LMABS" $args --json "$OUTDIR/$1.json" \
            >/dev/null 2>"$OUTDIR/$1.$r.log" || { cat "$OUTDIR/$1.$r.log" >&2; die "$1 failed"; }
        ;;
    ns2)
        # shellcheck disable=SC2086
        ip netns exec "$nsa" env -u OPENBLAS_CORETYPE mpirun --hostfile "$OUTDIR/hosts" -np 2 --bind-to none \
            --mca plm_rsh_agent "$PWD/tests/cli/netns_agent.sh" --mca btl tcp,self --mca btl_tcp_if_include "$veth" \
            --mca oob_tcp_if_include "$veth" -x OMP_NUM_THREADS -x LM_PROGRESS \
            "$OUTDIR/pin.sh" "$LMABS" $args --json "$OUTDIR/$1.json" >/dev/null 2>"$OUTDIR/$1.$r.log" ||
            { cat "$OUTDIR/$1.$r.log" >&2; die "$1 failed"; }
        ;;
    esac
    t1=$(date +%s.%N)
    echo "$t0 $t1" | awk '{ printf "%.2f\n", $2 - $1 }' >"$OUTDIR/$1.$r.wall"
}
cases="np1 np2"
[ -z "$ns_skip" ] && cases="$cases ns2"
r=1
while [ "$r" -le "$RUNS" ]; do
    for c in $cases; do run "$c"; done
    r=$((r + 1))
done

# seconds the CLI reports for the attribution; the MPI line's reductions, doubles, seconds
secs() { sed -n 's/.* \([0-9.]*\) s, \([0-9.]*\) tokens\/s$/\1/p' "$1" | head -1; }
mpistat() { sed -n 's/.*MPI: [0-9]* ranks, \([0-9]*\) reductions of \([0-9]*\) doubles.*, \([0-9.]*\) s in them.*/\1 \2 \3/p' "$1" | head -1; }
best() { # best CASE: "best-seconds best-run (all the runs' seconds)"
    all="" b="" br=1
    r=1
    while [ "$r" -le "$RUNS" ]; do
        s=$(secs "$OUTDIR/$1.$r.log")
        all="$all $s"
        if [ -z "$b" ] || awk -v a="$s" -v b="$b" 'BEGIN { exit !(a < b) }'; then b=$s br=$r; fi
        r=$((r + 1))
    done
    echo "$b $br ($(echo "$all" | sed 's/^ //'))"
}

echo "bench_mpi: SmolLM2-135M Q4_1 grad-weight, $N tokens in sequences of 256, 1 thread per rank, best of $RUNS"
echo "machine: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(getconf _NPROCESSORS_ONLN) cores; Open MPI $(mpirun --version 2>/dev/null | head -1 | awk '{ print $NF }')"
echo "load average before the table: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| case | attribution s | tok/s | speed-up | efficiency | mpirun wall s | reductions (doubles, s in them) | all runs (attribution s) |"
echo "|---|---|---|---|---|---|---|---|"
b1=$(best np1)
s1=${b1%% *}
for c in $cases; do
    b=$(best "$c")
    s=${b%% *} rest=${b#* } br=${rest%% *} all=${rest#* }
    w=$(cat "$OUTDIR/$c.$br.wall")
    st=$(mpistat "$OUTDIR/$c.$br.log")
    case $c in np1) label="1 rank" ;; np2) label="2 ranks, one host" ;; ns2) label="2 ranks, 2 namespaces (TCP)" ;; esac
    np=1
    [ "$c" != np1 ] && np=2
    echo "$label|$s|$N|$s1|$np|$w|${st:-0 0 0}|$all" | awk -F'|' '{
        split($7, m, " ")
        red = $5 > 1 ? sprintf("%d (%d, %.3f s)", m[1], m[2], m[3]) : "-"
        printf "| %s | %.2f | %.1f | %.2fx | %.0f%% | %.2f | %s | %s |\n", $1, $2, $3 / $2, $4 / $2,
               100 * $4 / $2 / $5, $6, red, $8 }'
done
echo
for c in $cases; do
    [ "$c" = np1 ] && continue
    if python3 tests/cli/mpi_cmp.py "$OUTDIR/np1.json" "$OUTDIR/$c.json" 2 >"$OUTDIR/cmp-$c.log" 2>&1; then
        echo "$c matrix against 1 rank: equal within 1e-9 ($(tail -1 "$OUTDIR/cmp-$c.log" | sed 's/^mpi_cmp: //'))"
    else
        echo "$c matrix against 1 rank: DIFFERS (see $OUTDIR/cmp-$c.log)"
    fi
done
[ -n "$ns_skip" ] && echo "2 namespaces: skipped ($ns_skip)"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- the projection ----------------------------------------------------------------
nsamp=$(( (N + 255) / 256 ))
st2=$(mpistat "$OUTDIR/np2.$(best np2 | cut -d' ' -f2).log")
stn=""
[ -z "$ns_skip" ] && stn=$(mpistat "$OUTDIR/ns2.$(best ns2 | cut -d' ' -f2).log")
python3 - "$s1" "$nsamp" "$st2" "$stn" "$T14" <<'EOF'
import math, sys
s1, nsamp, st2, stn, t14 = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split(), float(sys.argv[5])
red2, dbl2 = int(st2[0]), int(st2[1])
final = dbl2 - 4 * (red2 - 1)  # the flag reductions carry a few doubles each; the last one the sums
ALPHA, BETA = 50e-6, 1.25e9  # a 10 GbE cluster: latency per message, bytes/s
print()
print(f"projection (P nodes of one rank each; alpha {ALPHA * 1e6:.0f} us per message, beta {BETA / 1e9:.2f} GB/s, stated):")
if stn:
    print(f"  measured over the namespaces' TCP: {int(stn[0])} reductions in {float(stn[2]):.3f} s, "
          f"{float(stn[2]) / int(stn[0]) * 1e3:.2f} ms each (waits for the slower rank included)")
def project(name, n, ts, sum_doubles):
    print(f"  {name}: {n} samples, {ts:.3g} s per sample, {sum_doubles:.0f} doubles in the final sum")
    print("  | P | rounds | compute s | communication s | efficiency |")
    print("  |---|---|---|---|---|")
    for P in (2, 8, 64, 512):
        rounds = math.ceil(n / P)
        reds = rounds + 1
        hops = 2 * math.ceil(math.log2(P))
        comm = reds * hops * ALPHA + 2 * 8 * (sum_doubles + 4 * rounds) / BETA * math.ceil(math.log2(P))
        t = rounds * ts + comm
        print(f"  | {P} | {rounds} | {rounds * ts:.4g} | {comm:.3g} | {n * ts / P / t:.0%} |")
project("this bench (SmolLM2-135M, 1 thread)", nsamp, s1 / nsamp, final)
# a 14B model has 48 layers where SmolLM2 has 30: the sums grow with the layers
project(f"the seeds' job (14B, 50k tokens in samples of 512, {t14:g} tok/s per node)", math.ceil(50000 / 512),
        512 / t14, final * 48 / 30)
print("  (the efficiency is the balance of whole samples over the nodes: communication is below 0.1% of the time;"
      " more samples than nodes, or shorter ones, keep every node busy)")
EOF
