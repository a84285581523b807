#!/usr/bin/env bash
# Policy benchmarks of issue 6 (docs/BENCHMARKS.md, section "Policy"), in one run:
#   1. write in etcd -> rule visible in the kernel, for 10 / 1,000 / 10,000 rules over 100 and
#      1,000 endpoints, next to the floor (`nft -f` of the same ruleset) and our full apply;
#   2. time to apply a one-rule change at each scale;
#   3. iperf3 between two workloads on two lab hosts: no policy, 1,000 rules, host to host.
# Everything runs inside lab namespaces created by the tests (crates/node/tests/bench_policy.rs);
# needs root, etcd, nft and iperf3. Release build only. Prints a markdown table.
#
#   scripts/bench-policy.sh            # full run
#   BENCH_QUICK=1 scripts/bench-policy.sh   # smallest scale only (smoke test)
set -euo pipefail
cd "$(dirname "$0")/.."

out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo test --release -p calico-node --test bench_policy -- --ignored --nocapture --test-threads=1 \
    2>&1 | tee "$out" >&2

echo "kernel $(uname -r), $(nft --version), $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
echo
awk -F'|' '
  $2 == "header" { printf "|"; for (i = 3; i <= NF; i++) printf " %s |", $i; printf "\n|"; for (i = 3; i <= NF; i++) printf "---|"; printf "\n" }
  $2 == "scale"  { printf "|"; for (i = 3; i <= NF; i++) printf " %s |", $i; printf "\n" }
' <(grep -o 'BENCH|.*' "$out")
echo
echo "| iperf3, TCP, 5 s | Gbit/s |"
echo "|---|---|"
grep -o 'BENCH|throughput|.*' "$out" | awk -F'|' '{ printf "| %s | %s |\n", $3, $4 }'
