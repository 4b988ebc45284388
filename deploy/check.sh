#!/usr/bin/env bash
# Checks the manifests against a real API server: renders every kustomization,
# has the API server validate each object (server-side dry run, nothing is
# stored), and checks that plainText/ is the rendering of the kustomizations,
# that every value an administrator fills is a <PLACEHOLDER> there, and that
# the CronJob form runs the gateway with --once, once a minute, never twice
# at a time.
# The cert-manager variant (cert-manager/) is rendered and checked to issue
# the Secrets the manifests mount, with the components' URI SANs; without
# cert-manager's CRDs on the API server it gets no dry run.
#   deploy/check.sh            check (needs KUBECONFIG and kubectl)
#   deploy/check.sh --write    re-render plainText/
set -euo pipefail
cd "$(dirname "$0")"
kubectl=${KUBECTL:-${K8SWORKER_CLUSTER_BIN:+$K8SWORKER_CLUSTER_BIN/}kubectl}

render() {
	{
		echo "# Rendered from deploy/$1 by deploy/check.sh --write; edit the kustomization, not this file."
		"$kubectl" kustomize "$1"
	}
}

if [[ ${1:-} == --write ]]; then
	render prerequisites >plainText/prerequisites.yaml
	render overlays/worker >plainText/k8sworker.yaml
	render overlays/cronjob >plainText/k8sworker-cronjob.yaml
	render executor >plainText/executor.yaml
	exit 0
fi

failed=0
for pair in prerequisites:prerequisites overlays/worker:k8sworker overlays/cronjob:k8sworker-cronjob executor:executor; do
	dir=${pair%%:*} file=plainText/${pair##*:}.yaml
	if ! diff -q <(render "$dir") "$file" >/dev/null; then
		echo "deploy/$file is not the rendering of deploy/$dir: run deploy/check.sh --write" >&2
		failed=1
	fi
done

# Namespaced objects need their namespace to exist for a server-side dry run;
# a namespace of the check's own stands in for k8sworker and for the
# executor's placeholder.
ns=k8sworker-check-$$-$RANDOM
"$kubectl" create namespace "$ns" >/dev/null
trap '"$kubectl" delete namespace "$ns" --wait=false >/dev/null 2>&1 || true' EXIT
for dir in prerequisites overlays/worker overlays/cronjob executor; do
	if ! out=$("$kubectl" kustomize "$dir" |
		sed -e "s/^  namespace: k8sworker\$/  namespace: $ns/" -e "s/^  name: k8sworker\$/  name: $ns/" \
			-e "s/^  namespace: <NAMESPACE>\$/  namespace: $ns/" |
		"$kubectl" apply --dry-run=server -f - 2>&1); then
		echo "deploy/$dir is refused by the API server:" >&2
		echo "$out" >&2
		failed=1
	fi
done
# Every value to fill is a <PLACEHOLDER>, nothing an example that could be
# mistaken for a setting.
for file in plainText/k8sworker.yaml plainText/k8sworker-cronjob.yaml plainText/executor.yaml; do
	for placeholder in '<CLUSTER_NAME>' '<VANTIQ_NAMESPACE>'; do
		grep -qF -- "$placeholder" "$file" || {
			echo "deploy/$file: no $placeholder to fill" >&2
			failed=1
		}
	done
	if grep -nE 'REPLACE-WITH|my-cluster|my-vantiq-namespace|example\.com' "$file" | grep -v '^[0-9]*: *#' >&2; then
		echo "deploy/$file: a value to fill that is not a <PLACEHOLDER>" >&2
		failed=1
	fi
done
for placeholder in '<VANTIQ_URL>' '<VANTIQ_ACCESS_TOKEN>' '<REGISTRY>' '<BASE64_USER_COLON_PASSWORD>'; do
	for file in plainText/k8sworker.yaml plainText/k8sworker-cronjob.yaml; do
		grep -qF -- "$placeholder" "$file" || {
			echo "deploy/$file: no $placeholder to fill" >&2
			failed=1
		}
	done
done
grep -qF -- '<NAMESPACE>' plainText/executor.yaml || {
	echo "deploy/plainText/executor.yaml: no <NAMESPACE> to fill" >&2
	failed=1
}
# The CronJob form: the gateway with --once, once a minute, one run at a time,
# and no long-running gateway beside it.
expect() { # rendering, text, directory, what
	if ! grep -qxF -- "$2" <<<"$1"; then
		echo "deploy/$3: $4 (no line \`$2\`)" >&2
		failed=1
	fi
}
cronjob=$(cat plainText/k8sworker-cronjob.yaml)
expect "$cronjob" "kind: CronJob" overlays/cronjob "no CronJob"
expect "$cronjob" "  schedule: '*/1 * * * *'" overlays/cronjob "the schedule is once a minute"
expect "$cronjob" "  concurrencyPolicy: Forbid" overlays/cronjob "two runs must never overlap"
expect "$cronjob" "            - --once" overlays/cronjob "each run processes the queue and exits"
expect "$cronjob" "          restartPolicy: OnFailure" overlays/cronjob "a failed run is retried"
if [[ $(grep -c '^kind: Deployment$' plainText/k8sworker-cronjob.yaml) != 1 ]]; then
	echo "deploy/overlays/cronjob: only the planner runs as a Deployment" >&2
	failed=1
fi
# cert-manager: each Secret a Deployment mounts is a Certificate's, naming
# the component it belongs to.
for dir in cert-manager/ca cert-manager/worker cert-manager/executor; do
	if ! "$kubectl" kustomize "$dir" >/dev/null; then
		echo "deploy/$dir does not render" >&2
		failed=1
	fi
done
worker=$("$kubectl" kustomize cert-manager/worker 2>/dev/null || true)
executor=$("$kubectl" kustomize cert-manager/executor 2>/dev/null || true)
expect "$worker" "  secretName: k8sworker-planner-tls" cert-manager/worker "no Certificate for the planner's Secret"
expect "$worker" "  - spiffe://k8sworker/planner" cert-manager/worker "the planner's URI SAN"
expect "$worker" "  secretName: k8sworker-gateway-tls" cert-manager/worker "no Certificate for the gateway's Secret"
expect "$worker" "  - spiffe://k8sworker/gateway/<VANTIQ_NAMESPACE>/<CLUSTER_NAME>" cert-manager/worker \
	"the gateway's URI SAN must name the tenant of its ConfigMap"
expect "$executor" "  secretName: k8sworker-executor-tls" cert-manager/executor "no Certificate for the executor's Secret"
expect "$executor" "  - spiffe://k8sworker/executor/<NAMESPACE>" cert-manager/executor \
	"the executor's URI SAN must name its namespace"
while read -r mounted; do
	expect "$worker"$'\n'"$executor" "  $mounted" cert-manager "a mounted Secret without a Certificate"
done < <(grep -ho 'secretName: k8sworker-[a-z]*-tls' plainText/k8sworker.yaml plainText/k8sworker-cronjob.yaml plainText/executor.yaml | sort -u)

[[ $failed == 0 ]] && echo "deploy: manifests render and pass the API server's validation; the cert-manager variant renders and issues the mounted Secrets"
exit $failed
