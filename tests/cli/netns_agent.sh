#!/bin/sh
# netns_agent.sh -- Open MPI's remote launcher (--mca plm_rsh_agent) for ranks
# in network namespaces instead of hosts: mpirun calls it as
#   AGENT [options] HOST COMMAND...
# and it runs COMMAND (one shell string, as ssh hands it to the remote shell)
# in HOST's namespace. LM_NETNS_MAP="ADDRESS=NAMESPACE ..." in mpirun's
# environment maps each hostfile address to its namespace
# (tests/cli/test_mpi.sh, bench/bench_mpi.sh).
while [ $# -gt 0 ]; do case "$1" in -*) shift ;; *) break ;; esac; done
host=$1
shift
for pair in $LM_NETNS_MAP; do
    [ "${pair%%=*}" = "$host" ] && exec ip netns exec "${pair#*=}" sh -c "$*"
done
echo "netns_agent.sh: unknown host '$host' (LM_NETNS_MAP: $LM_NETNS_MAP)" >&2
exit 1
