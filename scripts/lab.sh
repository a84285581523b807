#!/usr/bin/env bash
# The seed's lab for humans: builds calico-lab, then runs it (default: `up`).
#   sudo scripts/lab.sh                 # up: lab-etcd (etcd at 192.168.33.10:2379), lab-node1, lab-node2
#   sudo scripts/lab.sh status
#   sudo scripts/lab.sh shell node1
#   sudo scripts/lab.sh exec node1 -- ip r
#   sudo scripts/lab.sh down
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "lab.sh: run as root (the lab creates network namespaces)" >&2; exit 1; }
cargo build --quiet -p calico-lab
# calicoctl lives next to calico-lab; the lab works without it, so a failed build only warns.
cargo build --quiet -p calico-rs --bins 2>/dev/null || echo "lab.sh: calicoctl did not build; the lab works without it" >&2
exec target/debug/calico-lab "${@:-up}"
