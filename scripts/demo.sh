#!/usr/bin/env bash
# The front door. On a fresh machine (Rust via rustup; Go, openssl and curl for
# the test cluster) it builds everything, starts the test cluster, then the
# control plane, an executor for a demo namespace (its RBAC and token), the
# planner and the gateway, deploys a sample installation through the REST API,
# waits until it is RUNNING and prints the installation, its Kubernetes objects
# and where to see its trace.
#
#   scripts/demo.sh          start (or restart) the demo
#   scripts/demo.sh stop     stop the demo's processes (and the test cluster if it started it)
#
# With KUBECONFIG set, the demo runs against that cluster instead of the test
# cluster (kind, minikube, a real one): it needs an admin of that cluster, who
# may create a namespace, a Role and a RoleBinding, and request a token.
# K8SWORKER_DEMO_TEST_CLUSTER=1 ignores KUBECONFIG and uses the test cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
state=target/demo
step() { printf '==> %s\n' "$*"; }

case "${1:-up}" in
  up) ;;
  stop|down)
    if [ -x target/debug/xtask ]; then
      target/debug/xtask down --state "$state"
    else
      cargo run --quiet -p xtask -- down --state "$state"
    fi
    if [ -f "$state/started-cluster" ]; then
      step "stopping the test cluster the demo started"
      tests/cluster/down.sh
      rm -f "$state/started-cluster"
    fi
    exit 0
    ;;
  *)
    echo "usage: $0 [stop]" >&2
    exit 2
    ;;
esac

if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust with rustup (https://rustup.rs); rust-toolchain.toml selects the version" >&2
  exit 1
fi

step "building the binaries (cargo build; the first build takes a few minutes)"
cargo build -p k8sworker-controlplane -p k8sworker-planner -p k8sworker-executor -p k8sworker-cli \
  -p k8sworker-gateway -p xtask

mkdir -p "$state"
if [ -n "${KUBECONFIG:-}" ] && [ -z "${K8SWORKER_DEMO_TEST_CLUSTER:-}" ]; then
  step "using the cluster of KUBECONFIG=$KUBECONFIG"
else
  if env_file=$(tests/cluster/status.sh 2>/dev/null); then
    step "using the running test cluster"
  else
    step "starting the test cluster (the first run builds Kubernetes from source with Go; later runs reuse it)"
    env_file=$(tests/cluster/up.sh | tail -n 1)
    touch "$state/started-cluster"
  fi
  # KUBECONFIG, and OTEL_EXPORTER_OTLP_ENDPOINT / JAEGER_QUERY_URL for the trace.
  # shellcheck disable=SC1090
  . "$env_file"
fi

exec target/debug/xtask demo --state "$state"
