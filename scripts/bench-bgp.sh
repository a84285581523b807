#!/usr/bin/env bash
# BGP receive-and-install benchmark: our speaker vs BIRD 2, each learning N IPv4 prefixes from a
# GoBGP peer and installing them into the kernel, in lab namespaces (needs root, gobgpd, bird).
# Prints "BENCH ..." lines per N (10,000 and 100,000): seconds from speaker start until
# `ip -4 route show proto P` counts N routes, peak RSS (VmHWM) of each speaker and the ratio,
# the anon/file split of RSS; and the Loc-RIB's heap bytes per prefix.
#
# Two builds of our speaker, each measured side by side with BIRD in its own run:
#  - [release]: the workspace's release profile as it is (`cargo build --release`);
#  - [release-small]: the same plus LTO, one codegen unit and opt-level "s", set with
#    CARGO_PROFILE_RELEASE_* for this run only. The binary shrinks from 6.2 to 3.6 MB, and the
#    pages of it the kernel maps are most of the speaker's RSS at 10,000 prefixes.
set -euo pipefail
cd "$(dirname "$0")/.."

run() {
  cargo test --release -p calico-bgp --test bench -- --ignored --nocapture --test-threads=1 2>&1 \
    | grep -E '^(BENCH|GoBGP holds|test )' | sed "s/^/[$1] /"
}

run release
(
  export CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
    CARGO_PROFILE_RELEASE_OPT_LEVEL=s
  run release-small
)
