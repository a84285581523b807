#!/usr/bin/env bash
# Container start-up on the Calico driver vs Docker's own bridge driver, in the seed lab.
#
#   sudo scripts/bench-docker.sh [ROUNDS]     # default 10 rounds
#   sudo scripts/bench-docker.sh networks     # cross-host network propagation (below)
#
# Needs the seed lab (scripts/seed-lab.sh); brings it up when it is not, and then tears it down
# at the end. Every round, alternating:
#   calico: `docker run -d --net cal_net1 busybox` on node2, then bbox1 on node1 pings the new
#           container's address until it answers (cross-host, over the BGP-learned routes).
#   bridge: `docker run -d --net benchbr busybox` on node1 (a user-defined bridge network on the
#           same dockerd), then a container already on benchbr pings it until it answers.
# Measured: docker run -> container running (the CLI returns after the start), and docker
# run -> first answered ping. The ping loop runs inside the pinging container (one docker exec,
# started once the new address is known), the same way for both drivers. All traffic stays
# inside the lab namespaces. Prints per-round times and the medians and ratio calico/bridge.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "bench-docker.sh: run as root" >&2; exit 1; }

# `networks`: a Calico network created (then removed) on one host, until it exists on (is gone
# from) the other, for BENCH_NETWORKS networks (default 100) one at a time; two lab namespaces
# with dockerd, the drivers and the syncer each (crates/docker/tests/bench_networks.rs).
# Latency = difference of the two dockerds' own `create` (`destroy`) event timestamps.
if [[ ${1:-} == networks ]]; then
  out=$(mktemp)
  trap 'rm -f "$out"' EXIT
  cargo test --release -p calico-docker --test bench_networks -- --ignored --nocapture \
    --test-threads=1 2>&1 | tee "$out" >&2
  echo "kernel $(uname -r), $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
  awk -F'|' '
    $2 == "header"   { printf "|"; for (i = 3; i <= NF; i++) printf " %s |", $i; printf "\n|"; for (i = 3; i <= NF; i++) printf "---|"; printf "\n" }
    $2 == "networks" { printf "|"; for (i = 3; i <= NF; i++) printf " %s |", $i; printf "\n" }
  ' <(grep -o 'BENCH|.*' "$out")
  exit 0
fi

ROUNDS=${1:-10}
DATA=/var/tmp/calico-lab
sock_of() { echo "$DATA/$1/docker/docker.sock"; }
docker_on() { local n=$1; shift; docker -H "unix://$(sock_of "$n")" "$@"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# One user of the fixed lab-* namespaces at a time (tests/seed_lab.rs, tests/seed_restart.rs).
mkdir -p /run/calico-lab
exec 9>/run/calico-lab/seed.lock
flock -w 600 9 || { echo "bench-docker.sh: seed lab lock busy for 10 min" >&2; exit 1; }

brought_up=0
if ! docker_on node1 inspect bbox1 >/dev/null 2>&1 || ! docker_on node2 inspect bbox2 >/dev/null 2>&1; then
  echo "seed lab not up: SETUP_SKIP_BUILD=1 scripts/seed-lab.sh" >&2
  SETUP_SKIP_BUILD=1 scripts/seed-lab.sh >/tmp/bench-docker-seed.log 2>&1 ||
    { tail -30 /tmp/bench-docker-seed.log >&2; exit 1; }
  brought_up=1
fi

cleanup() {
  for n in node1 node2; do
    docker_on "$n" ps -aq --filter name=bench- | xargs -r docker -H "unix://$(sock_of "$n")" rm -f >/dev/null 2>&1 || true
  done
  docker_on node1 network rm benchbr >/dev/null 2>&1 || true
  if ((brought_up)); then scripts/seed-lab.sh down >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

# The bridge network: the daemon runs with --bridge=none --iptables=false, which only drops
# docker0 and the NAT/filter rules; user-defined bridge networks still work (L2 within a node).
docker_on node1 network rm benchbr >/dev/null 2>&1 || true
docker_on node1 network create -d bridge --subnet 10.99.0.0/24 benchbr >/dev/null
docker_on node1 run -d --net benchbr --name benchbr-pinger busybox sleep 100000 >/dev/null

# run_and_ping RUN_NODE NETWORK PING_NODE PINGER NAME -> prints "run_ms ping_ms"
run_and_ping() {
  local rn=$1 net=$2 pn=$3 pinger=$4 name=$5 t0 t1 t2 ip
  t0=$(now_ms)
  docker_on "$rn" run -d --net "$net" --name "$name" busybox sleep 100000 >/dev/null
  t1=$(now_ms)
  ip=$(docker_on "$rn" inspect -f "{{(index .NetworkSettings.Networks \"$net\").IPAddress}}" "$name")
  # Bounded: at most 200 attempts (each waits at most 1 s for an answer).
  docker_on "$pn" exec "$pinger" sh -c \
    "i=0; until ping -c 1 -W 1 $ip >/dev/null 2>&1; do i=\$((i+1)); [ \$i -ge 200 ] && exit 1; usleep 5000; done"
  t2=$(now_ms)
  echo "$((t1 - t0)) $((t2 - t0))"
}

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

c_run=() c_ping=() b_run=() b_ping=()
printf '%-5s %14s %14s %14s %14s\n' round calico_run_ms calico_ping_ms bridge_run_ms bridge_ping_ms
for r in $(seq 1 "$ROUNDS"); do
  if ((r % 2)); then order="calico bridge"; else order="bridge calico"; fi
  for d in $order; do
    if [[ $d == calico ]]; then
      out=$(run_and_ping node2 cal_net1 node1 bbox1 "bench-cal-$r"); read -r a b <<<"$out"
      c_run+=("$a"); c_ping+=("$b")
    else
      out=$(run_and_ping node1 benchbr node1 benchbr-pinger "bench-br-$r"); read -r a b <<<"$out"
      b_run+=("$a"); b_ping+=("$b")
    fi
  done
  printf '%-5s %14s %14s %14s %14s\n' "$r" "${c_run[-1]}" "${c_ping[-1]}" "${b_run[-1]}" "${b_ping[-1]}"
  docker_on node2 rm -f "bench-cal-$r" >/dev/null
  docker_on node1 rm -f "bench-br-$r" >/dev/null
done

mc_run=$(printf '%s\n' "${c_run[@]}" | median)
mc_ping=$(printf '%s\n' "${c_ping[@]}" | median)
mb_run=$(printf '%s\n' "${b_run[@]}" | median)
mb_ping=$(printf '%s\n' "${b_ping[@]}" | median)
echo
echo "median docker run -> running:     calico ${mc_run} ms, bridge ${mb_run} ms, ratio $(awk -v a="$mc_run" -v b="$mb_run" 'BEGIN{printf "%.2f", a/b}')"
echo "median docker run -> first ping:  calico ${mc_ping} ms, bridge ${mb_ping} ms, ratio $(awk -v a="$mc_ping" -v b="$mb_ping" 'BEGIN{printf "%.2f", a/b}')"
