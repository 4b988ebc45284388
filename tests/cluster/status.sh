#!/usr/bin/env bash
# Exit status 0 if the test cluster in ${K8SWORKER_CLUSTER_DIR:-/tmp/k8sworker-testcluster}
# is up (apiserver /readyz and Jaeger health answer), and then prints its env file path;
# 1 otherwise. Lets a caller attach to a running cluster instead of starting (and later
# stopping) its own.
set -euo pipefail

dir=${K8SWORKER_CLUSTER_DIR:-/tmp/k8sworker-testcluster}
[[ -s $dir/env && -s $dir/pids ]] || exit 1
# shellcheck disable=SC1091
. "$dir/env"
curl -fsS --max-time 5 --cacert "$dir/pki/ca.crt" --cert "$dir/pki/admin.crt" \
	--key "$dir/pki/admin.key" "$K8SWORKER_API_SERVER/readyz" >/dev/null 2>&1 || exit 1
curl -fsS --max-time 5 "$K8SWORKER_JAEGER_HEALTH_URL" >/dev/null 2>&1 || exit 1
echo "$dir/env"
