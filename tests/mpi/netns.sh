#!/usr/bin/env bash
# tests/mpi/netns.sh -- the MPI executor across three "hosts" on one
# machine (issue 15): three network namespaces joined by a bridge (in a
# fourth, so the machine's own network is never touched), a private range
# (10.213.0.0/24) used only on those veths, each namespace with its own
# host name (a UTS namespace per launch), and Open MPI over TCP launched
# through an agent script that runs `ip netns exec` where mpirun would run
# ssh.  Runs: SPMD (test-mpi, np 3 = one rank per host), spawn mode from a
# singleton on host 1 onto hosts 2 and 3, the demo, a kill -9 of a worker
# rank (test-mpi-dead, --enable-recovery) and the generic suite.
#
# usage: netns.sh BUILD_DIR   (needs root and ip netns; else one
# "skipped" line and exit 77).  Namespaces are removed on any exit.
set -u
build=$(cd "${1:?usage: netns.sh BUILD_DIR}" && pwd)
if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null ||
   ! ip netns list >/dev/null 2>&1 || ! command -v unshare >/dev/null; then
  echo "skipped: MPI across network namespaces (needs root, ip netns, unshare)"
  exit 77
fi
# Namespaces left by a run that was killed outright (SIGKILL: no trap).
for ns in $(ip netns list | awk '{print $1}' | grep -E '^cf[0-9]+[abcs]$'); do
  pid=${ns#cf}; pid=${pid%?}
  kill -0 "$pid" 2>/dev/null || ip netns del "$ns" 2>/dev/null
done
tag=cf$$
sw=${tag}s
hosts="${tag}a ${tag}b ${tag}c"
work=$(mktemp -d /tmp/cf-netns-XXXXXX)
cleanup() {
  for h in $hosts $sw; do ip netns del "$h" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
set -e
ip netns add "$sw"
ip -n "$sw" link add br0 type bridge
ip -n "$sw" link set br0 up
i=1
for h in $hosts; do
  ip netns add "$h"
  ip link add "${h}v" netns "$h" type veth peer name "p$i" netns "$sw"
  ip -n "$sw" link set "p$i" master br0 up
  ip -n "$h" link set lo up
  ip -n "$h" addr add "10.213.0.$i/24" dev "${h}v"
  ip -n "$h" link set "${h}v" up
  i=$((i + 1))
done
ip netns exec "${tag}a" ip neigh >/dev/null

# The agent: called as `agent [options] HOST COMMAND...` where mpirun would
# call ssh; runs COMMAND in HOST's namespace, under HOST's own host name.
cat > "$work/agent" <<'AGENT'
#!/bin/sh
while [ $# -gt 0 ]; do case "$1" in -*) shift ;; *) break ;; esac; done
host=$1; shift
exec ip netns exec "$host" unshare --uts sh -c "hostname $host && $*"
AGENT
chmod +x "$work/agent"
{ for h in $hosts; do echo "$h slots=1"; done; } > "$work/hostfile"
cd "$work"   # a directory every "host" sees (one file system)

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_plm_rsh_agent="$work/agent"
export OMPI_MCA_btl=tcp,self
export OMPI_MCA_btl_tcp_if_include=10.213.0.0/24
export OMPI_MCA_oob_tcp_if_include=10.213.0.0/24
export OMPI_MCA_orte_default_hostfile="$work/hostfile"
export OMPI_MCA_rmaps_base_oversubscribe=1
on1() { ip netns exec "${tag}a" unshare --uts sh -c "hostname ${tag}a && exec \"\$@\"" sh "$@"; }
run() { # NAME COMMAND...: runs it on host 1 with a time limit
  name=$1; shift
  echo "== $name"
  if ! on1 timeout 120 "$@"; then echo "FAILED: $name"; exit 1; fi
}
mpirun_=(mpirun --hostfile "$work/hostfile" --map-by node -np 3)
run "SPMD test-mpi, one rank per host" "${mpirun_[@]}" "$build/tests/test-mpi" comm
run "hosts of the ranks" "${mpirun_[@]}" hostname
run "generic suite" "${mpirun_[@]}" -x CF_TEST_EXECUTOR=mpi "$build/tests/test-executor-mpi"
run "kill -9 of a worker rank" "${mpirun_[@]}" --enable-recovery "$build/tests/test-mpi-dead" kill
if [ -x "$build/examples/demo-mpi" ]; then
  run "demo" "${mpirun_[@]}" "$build/examples/demo-mpi" --executor mpi
fi
run "spawn mode from a singleton" env CF_TEST_SPAWN_HOSTS="${tag}b,${tag}c" "$build/tests/test-mpi" spawn
run "spawn mode, hosts from cf_mpi_opts.hostfile" env -u OMPI_MCA_orte_default_hostfile \
  CF_TEST_SPAWN_HOSTFILE="$work/hostfile" CF_TEST_SPAWN_HOSTS="${tag}b,${tag}c" \
  "$build/tests/test-mpi" spawn
echo "ok - MPI across three network namespaces"
