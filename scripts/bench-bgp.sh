#!/usr/bin/env bash
# BGP receive-and-install benchmark: our speaker vs BIRD 2, each learning N IPv4 prefixes from a
# GoBGP peer and installing them into the kernel, in lab namespaces (needs root, gobgpd, bird).
# Prints one "BENCH ..." line per N (10,000 and 100,000): seconds from speaker start until
# `ip -4 route show proto P` counts N routes, and peak RSS (VmHWM) of each speaker.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release -p calico-bgp --test bench -- --ignored --nocapture --test-threads=1 2>&1 \
  | grep -E '^(BENCH|GoBGP holds|test )'
