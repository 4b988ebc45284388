#!/usr/bin/env bash
# Runs every test: the unit tests of the pure parts, and the tests against the
# real test cluster (kube-apiserver with RBAC, controllers, kwok, Jaeger), the
# control plane over HTTP and the gRPC services. Builds (or reuses) the cluster
# binaries, starts the cluster unless one is already running, and stops it
# again at the end if it started it — also when tests fail.
#
# Tests that need the cluster are marked #[ignore] so that a plain `cargo test`
# without one stays quick and says what it left out; this script runs them all.
#
# Without arguments it ends with a bounded W100 load run (the load driver's
# scale mode, about a minute).
#
# Usage: scripts/test.sh [test name filter and other test-binary arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

command -v cargo >/dev/null || { echo "error: cargo is not installed (https://rustup.rs)" >&2; exit 1; }

step "building the test cluster binaries (cached after the first run)"
K8SWORKER_CLUSTER_BIN=$(tests/cluster/build.sh | tail -n 1)
export K8SWORKER_CLUSTER_BIN
for bin in etcd kube-apiserver kube-controller-manager kube-scheduler kwok jaeger; do
	[[ -x $K8SWORKER_CLUSTER_BIN/$bin ]] || { echo "error: $bin is missing from $K8SWORKER_CLUSTER_BIN" >&2; exit 1; }
done

step "the browser for the console's tests (Debian's chromium and chromium-driver)"
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
	command -v apt-get >/dev/null || { echo "error: the console's browser tests need chromium and chromedriver (Debian: apt-get install chromium chromium-driver)" >&2; exit 1; }
	apt-get install -y chromium chromium-driver || { apt-get update && apt-get install -y chromium chromium-driver; }
fi
for bin in chromium chromedriver; do
	command -v "$bin" >/dev/null || { echo "error: $bin is missing after installing it" >&2; exit 1; }
done

step "building the workspace and its tests"
cargo build --workspace --all-targets --locked

started=0
if env_file=$(tests/cluster/status.sh 2>/dev/null); then
	step "attaching to the running test cluster ($env_file)"
else
	step "starting the test cluster"
	env_file=$(tests/cluster/up.sh | tail -n 1)
	started=1
fi
cleanup() {
	status=$?
	if [[ $status != 0 && -d ${K8SWORKER_CLUSTER_DIR:-/tmp/k8sworker-testcluster}/logs ]]; then
		step "the last lines of the cluster's logs"
		tail -n 20 "${K8SWORKER_CLUSTER_DIR:-/tmp/k8sworker-testcluster}"/logs/*.log >&2 || true
	fi
	if [[ $started == 1 ]]; then
		step "stopping the test cluster"
		tests/cluster/down.sh || true
	fi
}
trap cleanup EXIT
# shellcheck disable=SC1090
. "$env_file"

step "checking that the cluster does what the tests rely on"
tests/cluster/smoke.sh

step "checking the manifests in deploy/ against the API server"
deploy/check.sh

step "running the tests"
cargo test --workspace --locked --no-fail-fast -- --include-ignored "$@"

# A bounded W100 (docs/performance.md): the scale run end to end, failing on any
# error or on a phase that outlasts its timeout. Only in a full run (no filter).
if [[ $# == 0 ]]; then
	step "load smoke run: W100 (100 installations in 10 namespaces)"
	timeout 300 cargo run --locked -q -p k8sworker-e2e --bin k8sworker-load -- \
		--installations 100 --namespaces 10 --gateways 8 --drifts 20 --timeout-secs 120
fi
