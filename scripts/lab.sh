#!/usr/bin/env bash
# The seed's lab for humans: builds calico-lab, then runs it (default: `up`).
#   scripts/lab.sh                 # up: lab-etcd (etcd at 192.168.33.10:2379), lab-node1, lab-node2
#   scripts/lab.sh status
#   scripts/lab.sh shell node1
#   scripts/lab.sh exec node1 -- ip r
#   scripts/lab.sh down
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need_root "the lab creates network namespaces" "$@"
cd "$(dirname "$0")/.."
cargo build --quiet -p calico-lab
# calicoctl lives next to calico-lab; the lab works without it, so a failed build only warns.
cargo build --quiet -p calico-rs --bins 2>/dev/null || echo "lab.sh: calicoctl did not build; the lab works without it" >&2
exec target/debug/calico-lab "${@:-up}"
