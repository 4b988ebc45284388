#!/usr/bin/env bash
# Checks a running test cluster end to end with kubectl and curl only:
#   1. /version reports the Kubernetes version pinned in go/k8s/go.mod;
#   2. a 2-replica StatefulSet reaches 2/2 Ready, its Pods have logs, then it scales to 0
#      with its Pods gone;
#   3. a ServiceAccount bound by a RoleBinding to a Role in namespace A, using a token
#      from the TokenRequest API, may create a ConfigMap in A and is Forbidden in B;
#   4. a span posted over OTLP/HTTP comes back from Jaeger's query API.
# Uses the env file written by up.sh; cleans up its namespaces. Exit status 0 = all passed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=${K8SWORKER_CLUSTER_DIR:-/tmp/k8sworker-testcluster}
[[ -s $dir/env ]] || { echo "smoke.sh: no $dir/env; run up.sh first" >&2; exit 1; }
# shellcheck disable=SC1091
. "$dir/env"
kubectl() { "$K8SWORKER_CLUSTER_BIN/kubectl" "$@"; }

log() { printf '[smoke.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
suffix=$(openssl rand -hex 3)
ns_a=smoke-a-$suffix
ns_b=smoke-b-$suffix
cleanup() { kubectl delete namespace "$ns_a" "$ns_b" --ignore-not-found --wait=true --timeout=60s >/dev/null || true; }
trap cleanup EXIT

# 1. version
want=$(awk '$1 == "k8s.io/kubernetes" { print $2 }' "$here/go/k8s/go.mod")
got=$(kubectl get --raw /version | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p')
[[ $got == "$want" ]] || fail "apiserver reports $got, want $want"
log "ok: apiserver reports $got"

# 2. StatefulSet 2/2 Ready, then 0 with Pods gone
kubectl create namespace "$ns_a" >/dev/null
kubectl create namespace "$ns_b" >/dev/null
kubectl -n "$ns_a" apply -f - >/dev/null <<'EOF'
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 80}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: registry.invalid/web:1
        ports: [{name: http, containerPort: 80}]
EOF
kubectl -n "$ns_a" rollout status statefulset/web --timeout=60s >/dev/null ||
	fail "StatefulSet did not become ready"
ready=$(kubectl -n "$ns_a" get statefulset web -o 'jsonpath={.status.readyReplicas}')
[[ $ready == 2 ]] || fail "StatefulSet readyReplicas=$ready, want 2"
log "ok: StatefulSet 2/2 Ready"
logs=$(kubectl -n "$ns_a" logs web-0) || fail "kubectl logs web-0 failed"
[[ $logs == *"fake container log"* ]] || fail "unexpected logs of web-0: $logs"
log "ok: Pod logs served (kwok, via the apiserver)"
kubectl -n "$ns_a" scale statefulset/web --replicas=0 >/dev/null
deadline=$((SECONDS + 60))
until [[ -z $(kubectl -n "$ns_a" get pods -l app=web -o name) ]]; do
	((SECONDS < deadline)) || fail "Pods still present 60s after scaling to 0"
	sleep 0.2
done
log "ok: scaled to 0, Pods gone"

# 3. RBAC through a TokenRequest token (no client certificate sent alongside)
kubectl -n "$ns_a" create serviceaccount executor >/dev/null
kubectl -n "$ns_a" create role configmaps --verb=get,list,create,delete --resource=configmaps >/dev/null
kubectl -n "$ns_a" create rolebinding executor --role=configmaps --serviceaccount="$ns_a:executor" >/dev/null
token=$(kubectl -n "$ns_a" create token executor --duration=10m)
as_sa() {
	"$K8SWORKER_CLUSTER_BIN/kubectl" --kubeconfig /dev/null --server "$K8SWORKER_API_SERVER" \
		--certificate-authority "$K8SWORKER_CA_FILE" --token "$token" "$@"
}
who=$(as_sa auth whoami -o 'jsonpath={.status.userInfo.username}')
[[ $who == "system:serviceaccount:$ns_a:executor" ]] || fail "token authenticates as '$who'"
as_sa -n "$ns_a" create configmap allowed --from-literal=k=v >/dev/null ||
	fail "ServiceAccount cannot create a ConfigMap in its own namespace"
if out=$(as_sa -n "$ns_b" create configmap denied --from-literal=k=v 2>&1); then
	fail "ServiceAccount created a ConfigMap in $ns_b"
fi
[[ $out == *Forbidden* || $out == *forbidden* ]] || fail "expected Forbidden in $ns_b, got: $out"
log "ok: token may create a ConfigMap in $ns_a, Forbidden in $ns_b"

# 4. OTLP/HTTP span -> Jaeger query API
service=smoke-$suffix
trace_id=$(openssl rand -hex 16)
span_id=$(openssl rand -hex 8)
now=$(date +%s%N)
curl -fsS --max-time 5 -H 'Content-Type: application/json' "$K8SWORKER_OTLP_HTTP_ENDPOINT/v1/traces" \
	--data-binary @- >/dev/null <<EOF || fail "OTLP/HTTP export refused"
{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"$service"}}]},
 "scopeSpans":[{"scope":{"name":"smoke"},"spans":[{"traceId":"$trace_id","spanId":"$span_id",
 "name":"smoke-span","kind":1,"startTimeUnixNano":"$now","endTimeUnixNano":"$((now + 1000000))"}]}]}]}
EOF
deadline=$((SECONDS + 30))
until curl -fsS --max-time 5 "$JAEGER_QUERY_URL/api/traces?service=$service" 2>/dev/null | grep -q "$trace_id"; do
	((SECONDS < deadline)) || fail "span not returned by $JAEGER_QUERY_URL within 30s"
	sleep 0.2
done
log "ok: span $trace_id returned by Jaeger"

cleanup
trap - EXIT
log "all checks passed"
