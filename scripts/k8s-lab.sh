#!/usr/bin/env bash
# The Kubernetes half of the seed, on one machine: a real cluster built from k8s.io/kubernetes
# (scripts/k8s-build.sh) in network namespaces on the seed's LAN, calico-rs installed with
# `helm install`, the examples applied with `kubectl apply -f`, a pod on each node.
#
#   sudo scripts/k8s-lab.sh          # install, build, bring it up and show it working
#   sudo scripts/k8s-lab.sh down     # tear everything down (pods, daemons, mounts, namespaces)
#
# Hosts (crates/lab/src/cluster): k8s-etcd 192.168.33.10 (Calico's etcd), k8s-kube
# 192.168.33.20 (etcd, kube-apiserver :6443, controller manager, scheduler), k8s-node1
# 192.168.33.11 and k8s-node2 192.168.33.12 (containerd, kubelet, kube-proxy each), and the
# Docker host k8s-docker1 192.168.33.13 (dockerd, calico-node by `calicoctl node run`, as in the
# seed lab) on the same Calico etcd and BGP mesh. Every address lives inside those namespaces;
# the host namespace is not touched.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "k8s-lab.sh: run as root (it creates network namespaces)" >&2; exit 1; }

LAB=target/debug/calico-lab
BIN=target/k8s/bin
IMAGES=target/k8s/images
KUBECONFIG_FILE=/run/calico-rs-k8s/admin.kubeconfig
API_NS=k8s-kube
ETCD=http://192.168.33.10:2379

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
kc() { nsenter --net=/run/netns/$API_NS "$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }
DOCKER_SOCK=/run/calico-lab/k8s/docker1/docker/docker.sock
docker1() { docker -H "unix://$DOCKER_SOCK" "$@"; }
calicoctl_docker1() {
  nsenter --net=/run/netns/k8s-docker1 env DATASTORE_TYPE=etcdv3 ETCD_ENDPOINTS=$ETCD \
    DOCKER_HOST="unix://$DOCKER_SOCK" CALICO_RUN_DIR=/run/calico-lab/k8s/docker1/run target/debug/calicoctl "$@"
}
calicoctl_etcd() { nsenter --net=/run/netns/k8s-etcd env DATASTORE_TYPE=etcdv3 ETCD_ENDPOINTS=$ETCD target/debug/calicoctl "$@"; }

# Bounded wait: wait_for SECONDS DESCRIPTION COMMAND...
wait_for() {
  local secs=$1 what=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= end)); then echo "timed out after ${secs}s waiting for $what" >&2; return 1; fi
    sleep 1
  done
}

if [[ ${1:-up} == down ]]; then
  [[ -x $LAB ]] && $LAB k8s down
  exit 0
fi

say "Installing and building (scripts/setup.sh, scripts/k8s-build.sh)"
scripts/setup.sh
scripts/k8s-build.sh
version=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' tests/cluster/go.mod)
mkdir -p "$BIN"
ln -sf "../$version/bin/kubectl" "$BIN/kubectl"
ln -sf "$(command -v helm)" "$BIN/helm"

say "Images for containerd, FROM scratch (images/containerd/build.sh)"
images/containerd/build.sh "$IMAGES"

if [[ -e /run/calico-lab/runs/k8s.json ]]; then
  say "Removing the previous Kubernetes lab"
  $LAB k8s down
fi

say "Cluster: LAN, Calico etcd, control plane, two nodes; helm install calico-rs; the Docker host (calico-lab k8s up)"
$LAB k8s up --images "$IMAGES" --chart charts/calico-rs --docker-host

say "kubectl get nodes -o wide"
kc get nodes -o wide
say "kubectl get pods -n kube-system -o wide"
kc get pods -n kube-system -o wide

say "kubectl apply -f manifests/ippool.yaml"
kc apply -f manifests/ippool.yaml
wait_for 60 "IPPool pool-10-244 in the Calico etcd" calicoctl_etcd get ippool pool-10-244
# The chart's pool only bootstrapped the controllers' pod: new pods take the example's pool
# (Calico's pool migration: disable the old pool, its addresses stay with their pods).
calicoctl_etcd patch ippool default-ipv4-ippool --patch '{"spec":{"disabled":true}}'
say "calicoctl get ippool -o wide   (from the Calico etcd)"
calicoctl_etcd get ippool -o wide

say "A pod on each node (localhost/busybox:1)"
for n in 1 2; do
  kc apply -f - <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: bbox$n
  labels: {app: bbox}
spec:
  nodeSelector: {kubernetes.io/hostname: node$n}
  terminationGracePeriodSeconds: 0
  containers:
    - name: bbox
      image: localhost/busybox:1
      imagePullPolicy: Never
      command: ["sh", "-c", "echo bbox$n up; exec sleep 100000"]
YAML
done
kc wait --for=condition=Ready pod/bbox1 pod/bbox2 --timeout=180s
say "kubectl get pods -o wide"
kc get pods -o wide

say "[root@docker1 ~]# docker network create --driver calico --ipam-driver calico-ipam docknet"
docker1 network create --driver calico --ipam-driver calico-ipam docknet
say "[root@docker1 ~]# docker container run --net docknet --name dbox -tid busybox"
docker1 container run --net docknet --name dbox -tid busybox
dbox_ip=$(docker1 inspect -f '{{(index .NetworkSettings.Networks "docknet").IPAddress}}' dbox)
echo "dbox: $dbox_ip"

# Full mesh of three: every node has two peers Established.
mesh_up() {
  for pod in $(kc get pods -n kube-system -l app.kubernetes.io/name=calico-node -o name); do
    [[ $(kc exec -n kube-system "$pod" -c calico-node -- calicoctl node status | grep -c Established) == 2 ]] || return 1
  done
  [[ $(calicoctl_docker1 node status | grep -c Established) == 2 ]]
}
wait_for 90 "BGP Established between node1, node2 and docker1" mesh_up
say "calicoctl node status (inside each calico-node pod, and on the Docker host)"
for pod in $(kc get pods -n kube-system -l app.kubernetes.io/name=calico-node -o name); do
  echo "# $(kc get -n kube-system "$pod" -o jsonpath='{.spec.nodeName}') ($pod)"
  kc exec -n kube-system "$pod" -c calico-node -- calicoctl node status
done
echo "# docker1 (calicoctl on the Docker host)"
calicoctl_docker1 node status

bbox2_ip=$(kc get pod bbox2 -o jsonpath='{.status.podIP}')
say "kubectl exec bbox1 -- ip a"
kc exec bbox1 -- ip a
say "kubectl exec bbox1 -- ping -c 4 $bbox2_ip   (bbox2 on node2)"
kc exec bbox1 -- ping -c 4 "$bbox2_ip"
say "kubectl logs bbox2"
kc logs bbox2

# docknet's profile admits only docknet's members (as the seed's networks): the pod is refused.
wait_for 60 "node1's route to dbox" sh -c "ip netns exec k8s-node1 ip route get $dbox_ip | grep -q via"
say "kubectl exec bbox1 -- ping -c 2 -W 1 $dbox_ip   (dbox on docker1, before the policy)"
if kc exec bbox1 -- ping -c 2 -W 1 "$dbox_ip"; then
  echo "unexpected: dbox answered a pod that is not on docknet" >&2; exit 1
fi
echo "refused: bbox1 is not a member of docknet"

say "kubectl apply -f - (GlobalNetworkPolicy admit-default-into-docknet)"
kc apply -f - <<YAML
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: admit-default-into-docknet
spec:
  # Docker endpoints on docknet carry the label docknet (the network's profile applies it).
  selector: has(docknet)
  types: [Ingress]
  ingress:
    # Pods of namespace default...
    - action: Allow
      source:
        selector: projectcalico.org/namespace == 'default'
    # ...and everything else goes on to the profile (docknet's own members).
    - action: Pass
YAML
wait_for 60 "the policy to admit bbox1 into docknet" kc exec bbox1 -- ping -c 1 -W 1 "$dbox_ip"
say "kubectl exec bbox1 -- ping -c 4 $dbox_ip   (dbox on docker1, after the policy)"
kc exec bbox1 -- ping -c 4 "$dbox_ip"

cat <<EOF

The Kubernetes lab is up.
  admin kubeconfig:  $KUBECONFIG_FILE   (server https://192.168.33.20:6443)
  kubectl and helm:  $BIN/kubectl, $BIN/helm
  kubectl from the host: sudo nsenter --net=/run/netns/$API_NS $BIN/kubectl --kubeconfig $KUBECONFIG_FILE get pods -A
  (the API server lives on the lab's LAN; the host namespace has no route to it)
  the Docker host:   docker -H unix://$DOCKER_SOCK ps
Tear it down:
  sudo scripts/k8s-lab.sh down
EOF
