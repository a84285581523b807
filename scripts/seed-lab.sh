#!/usr/bin/env bash
# The seed, reproduced: "Deploying Calico networking with Docker" on one machine.
#
#   scripts/seed-lab.sh          # install, build, bring the lab up and show it working
#   scripts/seed-lab.sh down     # tear everything down (containers, daemons, namespaces)
#   scripts/seed-lab.sh dockerd-start node1   # start a stopped node's dockerd again
#
# Runs as root; started by another user it runs itself again through sudo (when installed).
# Hosts are network namespaces on one LAN segment (see crates/lab): lab-etcd 192.168.33.10,
# lab-node1 192.168.33.11, lab-node2 192.168.33.12. Each node runs its own dockerd (own plugin
# directory, own containerd) and calico-node as a host-networked container. Every address
# lives inside those namespaces; the host namespace is not touched.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need_root "it creates network namespaces" "$@"
cd "$(dirname "$0")/.."

ROOT=/run/calico-lab/lab
DATA=/var/tmp/calico-lab
LAB=target/debug/calico-lab
CTL=$PWD/target/debug/calicoctl
NODES=(node1 node2)

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
ns_of() { echo "lab-$1"; }
in_node() { local n=$1; shift; ip netns exec "$(ns_of "$n")" "$@"; }
sock_of() { echo "$DATA/$1/docker/docker.sock"; }
docker_on() { local n=$1; shift; docker -H "unix://$(sock_of "$n")" "$@"; }
ctl_on() {
  local n=$1; shift
  in_node "$n" env CALICO_RUN_DIR="$ROOT/$n/run" DOCKER_HOST="unix://$(sock_of "$n")" \
    "$CTL" "$@"
}

# Bounded wait: wait_for SECONDS DESCRIPTION COMMAND...
wait_for() {
  local secs=$1 what=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= end)); then echo "timed out after ${secs}s waiting for $what" >&2; return 1; fi
    sleep 0.5
  done
}

start_dockerd() {
  local n=$1 dir=$DATA/$1/docker
  mkdir -p "$dir" "$DATA/$n/plugins"
  echo '{}' >"$dir/daemon.json"
  # Own mount namespace: this daemon sees its node's plugin folder at /run/docker/plugins.
  # nsenter, not `ip netns exec`, which remounts /sys and hides the cgroup mounts dockerd needs.
  setsid unshare --mount --propagation private sh -c "
    mkdir -p /run/docker/plugins && mount --bind '$DATA/$n/plugins' /run/docker/plugins &&
    exec nsenter --net=/run/netns/$(ns_of "$n") dockerd --config-file '$dir/daemon.json' \
      --data-root '$dir/data' --exec-root '$dir/exec' -H 'unix://$dir/docker.sock' \
      --pidfile '$dir/docker.pid' --bridge=none --iptables=false --ip6tables=false \
      --shutdown-timeout 5" >"$dir/dockerd.log" 2>&1 </dev/null &
  wait_for 60 "dockerd on $n" docker_on "$n" version
}

stop_dockerd() {
  local n=$1 dir=$DATA/$1/docker
  if docker_on "$n" version >/dev/null 2>&1; then
    # Workloads first, while calico-node still serves the drivers: removing them after it is
    # gone makes dockerd retry every driver call for ~15 s each.
    docker_on "$n" ps -a --format '{{.ID}} {{.Names}}' | awk '$2 != "calico-node" {print $1}' | xargs -r docker -H "unix://$(sock_of "$n")" rm -f >/dev/null 2>&1 || true
    docker_on "$n" ps -aq | xargs -r docker -H "unix://$(sock_of "$n")" rm -f >/dev/null 2>&1 || true
  fi
  if [[ -f $dir/docker.pid ]]; then
    local pid; pid=$(cat "$dir/docker.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  # containerd started by that dockerd, identified by its exec root.
  pkill -9 -f "containerd.*$dir/exec" 2>/dev/null || true
  pkill -9 -f "containerd-shim.*$dir" 2>/dev/null || true
  umount -R "$dir/exec" 2>/dev/null || true
  umount -R "$dir/data" 2>/dev/null || true
  rm -rf "$DATA/$n"
}

build_images() {
  images/busybox/build.sh "$(sock_of "$1")" busybox:latest >/dev/null
  images/calico-node/build.sh "$(sock_of "$1")" calico-rs/node:latest target/debug/calico-node /usr/sbin/ip >/dev/null
}

down() {
  for n in "${NODES[@]}"; do stop_dockerd "$n"; done
  [[ -x $LAB ]] && $LAB down || true
  rm -rf "$DATA"
}

# Start one node's dockerd again the way `up` does (e.g. after stopping it to test a restart).
if [[ ${1:-up} == dockerd-start ]]; then
  [[ -n ${2:-} ]] || { echo "usage: seed-lab.sh dockerd-start NODE" >&2; exit 2; }
  start_dockerd "$2"
  exit 0
fi

if [[ ${1:-up} == down ]]; then
  down
  echo "lab is down"
  exit 0
fi

say "Installing and building (scripts/setup.sh)"
scripts/setup.sh

if [[ -d $ROOT ]]; then
  say "Removing the previous lab"
  down
fi

say "Hosts, LAN and etcd at 192.168.33.10:2379 (calico-lab up)"
$LAB up

say "One dockerd per node, and the images (busybox and calico-node, FROM scratch)"
for n in "${NODES[@]}"; do
  step "$n: starting dockerd (seconds)" start_dockerd "$n"
  step "$n: building the busybox and calico-node images (FROM scratch, seconds)" build_images "$n"
  echo "$n: dockerd $(docker_on "$n" version --format '{{.Server.Version}}') at $(sock_of "$n")"
done

cfg=$ROOT/calicoctl.cfg
echo; echo "# cat /etc/calico/calicoctl.cfg   (the lab's copy: $cfg)"; cat "$cfg"

for n in "${NODES[@]}"; do
  say "[root@$n ~]# calicoctl node run --node-image=calico-rs/node:latest -c /etc/calico/calicoctl.cfg"
  ctl_on "$n" node run --name "$n" --node-image=calico-rs/node:latest -c "$cfg"
done

say "[root@node1 ~]# calicoctl node status"
wait_for 60 "the BGP session between node1 and node2" \
  sh -c "ip netns exec lab-node1 env CALICO_RUN_DIR=$ROOT/node1/run $CTL node status | grep -q Established"
ctl_on node1 node status

say "[root@node1 ~]# docker network create --driver calico --ipam-driver calico-ipam cal_net1"
docker_on node1 network create --driver calico --ipam-driver calico-ipam cal_net1
echo "node2 sees it too (created there by its calico-node):"
wait_for 30 "cal_net1 on node2" docker_on node2 network inspect cal_net1
docker_on node2 network ls --filter driver=calico

say "[root@node1 ~]# docker container run --net cal_net1 --name bbox1 -tid busybox"
docker_on node1 container run --net cal_net1 --name bbox1 -tid busybox
say "[root@node2 ~]# docker container run --net cal_net1 --name bbox2 -tid busybox"
docker_on node2 container run --net cal_net1 --name bbox2 -tid busybox

say "[root@node1 ~]# docker exec bbox1 ip a"
docker_on node1 exec bbox1 ip a

bbox2_ip=$(docker_on node2 inspect -f '{{(index .NetworkSettings.Networks "cal_net1").IPAddress}}' bbox2)
wait_for 30 "node1's route to bbox2" sh -c "ip netns exec lab-node1 ip route get $bbox2_ip | grep -q via"
say "[root@node1 ~]# ip r"
in_node node1 ip r
say "[root@node2 ~]# ip r"
in_node node2 ip r

# Names of containers on other hosts reach the hosts file within a sync round.
wait_for 30 "the name bbox2 on node1" docker_on node1 exec bbox1 grep -qw bbox2 /etc/hosts
say "[root@node1 ~]# docker exec bbox1 ping -c 4 bbox2"
docker_on node1 exec bbox1 ping -c 4 bbox2

cat <<EOF

The lab is up. A shell on a node (calicoctl and docker point at that node), as root:
  target/debug/calico-lab shell node1
  docker -H unix://$(sock_of node1) ps
Tear it down:
  scripts/seed-lab.sh down
EOF
