#!/usr/bin/env bash
# Checks the manifests against a real API server: renders every kustomization,
# has the API server validate each object (server-side dry run, nothing is
# stored), and checks that plainText/ is the rendering of the kustomizations.
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
	render executor >plainText/executor.yaml
	exit 0
fi

failed=0
for pair in prerequisites:prerequisites overlays/worker:k8sworker executor:executor; do
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
for dir in prerequisites overlays/worker executor; do
	if ! out=$("$kubectl" kustomize "$dir" |
		sed -e "s/^  namespace: k8sworker\$/  namespace: $ns/" -e "s/^  name: k8sworker\$/  name: $ns/" \
			-e "s/^  namespace: REPLACE-WITH-THE-NAMESPACE\$/  namespace: $ns/" |
		"$kubectl" apply --dry-run=server -f - 2>&1); then
		echo "deploy/$dir is refused by the API server:" >&2
		echo "$out" >&2
		failed=1
	fi
done
[[ $failed == 0 ]] && echo "deploy: manifests render and pass the API server's validation"
exit $failed
