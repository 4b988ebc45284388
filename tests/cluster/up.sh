#!/usr/bin/env bash
# Starts the test cluster on loopback: etcd, kube-apiserver (RBAC, TokenRequest),
# kwok with one fake Node, kube-controller-manager, kube-scheduler, and Jaeger
# (in-memory, OTLP in, query API out).
#
# State (PKI, kubeconfig, etcd data, PIDs, logs) lives in
# ${K8SWORKER_CLUSTER_DIR:-/tmp/k8sworker-testcluster}; source <dir>/env afterwards.
# If the cluster in that directory already answers /readyz, nothing is started.
# Otherwise whatever is left of an earlier run there is stopped and wiped first.
#
# Binaries: ${K8SWORKER_CLUSTER_BIN}, else whatever build.sh prints (a warm
# build.sh builds nothing). Ports: see the defaults below; all are overridable.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=${K8SWORKER_CLUSTER_DIR:-/tmp/k8sworker-testcluster}
timeout=${K8SWORKER_START_TIMEOUT:-120} # seconds, per component

etcd_port=${K8SWORKER_ETCD_PORT:-23790}
etcd_peer_port=${K8SWORKER_ETCD_PEER_PORT:-23800}
api_port=${K8SWORKER_API_PORT:-16443}
kcm_port=${K8SWORKER_KCM_PORT:-10257}
scheduler_port=${K8SWORKER_SCHEDULER_PORT:-10259}
kwok_port=${K8SWORKER_KWOK_PORT:-10250} # the fake Node's "kubelet" API (logs)
export K8SWORKER_OTLP_GRPC_PORT=${K8SWORKER_OTLP_GRPC_PORT:-4317}
export K8SWORKER_OTLP_HTTP_PORT=${K8SWORKER_OTLP_HTTP_PORT:-4318}
export K8SWORKER_JAEGER_QUERY_PORT=${K8SWORKER_JAEGER_QUERY_PORT:-16686}
export K8SWORKER_JAEGER_QUERY_GRPC_PORT=${K8SWORKER_JAEGER_QUERY_GRPC_PORT:-16685}
export K8SWORKER_JAEGER_HEALTH_PORT=${K8SWORKER_JAEGER_HEALTH_PORT:-13133}

api=https://127.0.0.1:$api_port
etcd=http://127.0.0.1:$etcd_port
node=kwok-node-0

log() { printf '[up.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

admin_curl() {
	curl -fsS --max-time 5 --cacert "$dir/pki/ca.crt" --cert "$dir/pki/admin.crt" \
		--key "$dir/pki/admin.key" "$@"
}

# One up.sh/down.sh at a time per state directory (parallel test processes may all
# call up.sh); down.sh run from here inherits the lock.
mkdir -p "$(dirname "$dir")"
exec 9>"$dir.lock"
flock -w $((timeout * 3)) 9 || die "another up.sh/down.sh holds $dir.lock"
export K8SWORKER_CLUSTER_LOCKED=1

# ---- already running? ---------------------------------------------------------------------
if "$here/status.sh" >/dev/null; then
	log "already running; source $dir/env"
	echo "$dir/env"
	exit 0
fi
if [[ -e $dir ]]; then
	log "stale state in $dir; stopping and wiping it"
	"$here/down.sh"
	rm -rf "$dir"
fi

# A port someone else listens on would make a health check below answer for the wrong
# process; refuse to start instead.
for port in "$etcd_port" "$etcd_peer_port" "$api_port" "$kcm_port" "$scheduler_port" "$kwok_port" \
	"$K8SWORKER_OTLP_GRPC_PORT" "$K8SWORKER_OTLP_HTTP_PORT" "$K8SWORKER_JAEGER_QUERY_PORT" \
	"$K8SWORKER_JAEGER_QUERY_GRPC_PORT" "$K8SWORKER_JAEGER_HEALTH_PORT"; do
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		die "127.0.0.1:$port is already in use (another cluster? see the K8SWORKER_*_PORT settings)"
	fi
done

# ---- binaries -------------------------------------------------------------------------------
bin=${K8SWORKER_CLUSTER_BIN:-$("$here/build.sh")}
stages=$bin/../share/kwok-stages.yaml
for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok jaeger; do
	[[ -x $bin/$b ]] || die "missing binary $bin/$b (run tests/cluster/build.sh)"
done
[[ -s $stages ]] || die "missing kwok stages $stages (run tests/cluster/build.sh)"
kubectl() { "$bin/kubectl" --kubeconfig "$dir/admin.kubeconfig" "$@"; }

mkdir -p "$dir"/{pki,logs}
mkdir -m 700 "$dir/etcd"
: >"$dir/pids"
started=0
# If anything below fails, stop what was started; the logs stay for debugging.
trap '[[ $started == 1 ]] || { log "start failed; logs in $dir/logs"; "$here/down.sh" >&2 || true; }' EXIT

# start NAME COMMAND... : runs COMMAND in its own session (so the caller's Ctrl-C or
# terminal hang-up does not reach it), logs to logs/NAME.log, records "NAME PID EXE".
start() {
	local name=$1
	shift
	setsid "$@" </dev/null >"$dir/logs/$name.log" 2>&1 9>&- & # 9: the lock stays with us
	local pid=$!
	echo "$name $pid $1" >>"$dir/pids"
	log "started $name (pid $pid)"
}

# wait_for NAME WHAT CHECK... : polls CHECK until it succeeds, NAME's process dies, or
# the timeout passes.
wait_for() {
	local name=$1 what=$2
	shift 2
	local pid
	pid=$(awk -v n="$name" '$1 == n { print $2 }' "$dir/pids")
	local deadline=$((SECONDS + timeout))
	until "$@" >/dev/null 2>&1; do
		if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
			tail -n 30 "$dir/logs/$name.log" >&2 || true
			die "$name exited; log: $dir/logs/$name.log"
		fi
		if ((SECONDS >= deadline)); then
			tail -n 30 "$dir/logs/$name.log" >&2 || true
			die "$name: no $what after ${timeout}s; log: $dir/logs/$name.log"
		fi
		sleep 0.2
	done
	log "$name: $what"
}

# ---- PKI --------------------------------------------------------------------------------------
# One CA signs the serving cert and the admin client cert; a separate key signs
# service-account tokens. ECDSA P-256, PKCS#8 (what envtest uses; rustls accepts it).
(
	cd "$dir/pki"
	key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
	key ca.key
	openssl req -x509 -new -key ca.key -subj "/CN=k8sworker-testcluster-ca" -days 365 -out ca.crt \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"
	issue() { # NAME SUBJECT EXTENSIONS
		key "$1.key"
		openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
		openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 \
			-extfile <(printf '%s\n' "$3") -out "$1.crt" 2>/dev/null
	}
	common=$'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature'
	# 10.0.0.1 is the "kubernetes" Service address in the (fictional) service range.
	issue apiserver "/CN=kube-apiserver" \
		"$common"$'\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1,IP:10.0.0.1'
	issue admin "/O=system:masters/CN=k8sworker-test-admin" "$common"$'\nextendedKeyUsage=clientAuth'
	issue kwok "/CN=$node" "$common"$'\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:'"$node"',IP:127.0.0.1'
	key sa.key
	openssl pkey -in sa.key -pubout -out sa.pub
	rm -f ./*.csr ca.srl
)

# ---- etcd -------------------------------------------------------------------------------------
start etcd "$bin/etcd" --name k8sworker --data-dir "$dir/etcd" \
	--listen-client-urls "$etcd" --advertise-client-urls "$etcd" \
	--listen-peer-urls "http://127.0.0.1:$etcd_peer_port" \
	--initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
	--initial-cluster "k8sworker=http://127.0.0.1:$etcd_peer_port" \
	--unsafe-no-fsync --log-level warn
wait_for etcd "/health ok" curl -fsS --max-time 2 "$etcd/health"

# ---- kube-apiserver -------------------------------------------------------------------------
# --advertise-address 127.0.0.1 + --endpoint-reconciler-type none: never advertise
# another interface, and no loopback-endpoint errors for the "kubernetes" Service.
# ServiceAccount admission is off (as in envtest): no kubelet mounts tokens here, and
# Pods need not wait for their namespace's "default" ServiceAccount.
# Nodes are reached (logs, exec) by InternalIP only, i.e. 127.0.0.1, never by a DNS
# lookup of the Node name.
# A /16 of Service addresses: the W1000 load run alone makes 2,000 Services with one
# (its own and its calibration's); a /24 holds 254.
start kube-apiserver "$bin/kube-apiserver" \
	--etcd-servers "$etcd" \
	--bind-address 127.0.0.1 --secure-port "$api_port" \
	--advertise-address 127.0.0.1 --endpoint-reconciler-type none \
	--tls-cert-file "$dir/pki/apiserver.crt" --tls-private-key-file "$dir/pki/apiserver.key" \
	--client-ca-file "$dir/pki/ca.crt" \
	--authorization-mode RBAC \
	--service-cluster-ip-range 10.0.0.0/16 \
	--service-account-issuer "$api" \
	--service-account-key-file "$dir/pki/sa.pub" \
	--service-account-signing-key-file "$dir/pki/sa.key" \
	--disable-admission-plugins ServiceAccount \
	--allow-privileged=true \
	--kubelet-preferred-address-types InternalIP \
	--kubelet-certificate-authority "$dir/pki/ca.crt" \
	--profiling=false
wait_for kube-apiserver "/readyz ok" admin_curl "$api/readyz"

# ---- kubeconfig -------------------------------------------------------------------------------
kc=$dir/admin.kubeconfig
"$bin/kubectl" config --kubeconfig "$kc" set-cluster k8sworker-test --server "$api" \
	--certificate-authority "$dir/pki/ca.crt" --embed-certs=true >/dev/null
"$bin/kubectl" config --kubeconfig "$kc" set-credentials k8sworker-test-admin \
	--client-certificate "$dir/pki/admin.crt" --client-key "$dir/pki/admin.key" --embed-certs=true >/dev/null
"$bin/kubectl" config --kubeconfig "$kc" set-context k8sworker-test --cluster k8sworker-test \
	--user k8sworker-test-admin --namespace default >/dev/null
"$bin/kubectl" config --kubeconfig "$kc" use-context k8sworker-test >/dev/null
chmod 600 "$kc"

# ---- kwok + one fake Node -------------------------------------------------------------------
# kwok is started before the controllers so that down.sh (reverse order) stops it
# after them: terminating Pods keep finishing until the controllers are gone.
# Node and Pod IPs are fiction: the Node's address is 127.0.0.1 (the apiserver may
# dial it for logs), Pod IPs come from --cidr and must never be connected to.
#
# kwok also plays the Node's kubelet API on 127.0.0.1:$kwok_port, so `kubectl logs`
# (the pods/log subresource) works: every container of every Pod "logs" the
# CRI-format file <dir>/pod.log, which tests may append to.
now=$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)
printf '%s stdout F %s\n' "$now" "k8sworker test cluster: fake container log" \
	"$now" "logs come from $dir/pod.log via kwok" >"$dir/pod.log"
cat >"$dir/kwok-logs.yaml" <<EOF
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterLogs
metadata:
  name: all-pods
spec:
  logs:
  - logsFile: $dir/pod.log
EOF
# Failing containers, chosen by image name (tests/cluster/README.md, "Failing pods"):
# a container image ending in -pullfail is stuck in ImagePullBackOff (Pending), one
# ending in -crashloop in CrashLoopBackOff (Running, not Ready). Each stage outweighs
# the "fast" set's pod-ready, which kwok would otherwise pick for the same Pending
# pod, and renders no timestamp, so replaying it on the pod's next event writes
# nothing. Written here, not by build.sh: build.sh's content keys the binary cache.
cat >"$dir/kwok-failures.yaml" <<'EOF'
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: k8sworker-image-pull-backoff
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: .metadata.deletionTimestamp
      operator: DoesNotExist
    - key: '[.spec.initContainers[]?, .spec.containers[] | .image | endswith("-pullfail")] | any'
      operator: In
      values: ["true"]
  weight: 1000000
  next:
    statusTemplate: |
      conditions:
      - type: Initialized
        status: "True"
      - type: Ready
        status: "False"
        reason: ContainersNotReady
      - type: ContainersReady
        status: "False"
        reason: ContainersNotReady
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        imageID: ""
        name: {{ .name | Quote }}
        ready: false
        restartCount: 0
        started: false
        state:
          waiting:
            {{ if hasSuffix "-pullfail" .image }}
            reason: ImagePullBackOff
            message: {{ printf "Back-off pulling image %q" .image | Quote }}
            {{ else }}
            reason: ContainerCreating
            {{ end }}
      {{ end }}
      phase: Pending
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: k8sworker-crash-loop-backoff
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: .metadata.deletionTimestamp
      operator: DoesNotExist
    - key: '[.spec.containers[] | .image | endswith("-crashloop")] | any'
      operator: In
      values: ["true"]
    - key: '[.spec.initContainers[]?, .spec.containers[] | .image | endswith("-pullfail")] | any'
      operator: In
      values: ["false"]
  weight: 1000000
  next:
    statusTemplate: |
      {{ $pod := .metadata.name }}
      conditions:
      - type: Initialized
        status: "True"
      - type: Ready
        status: "False"
        reason: ContainersNotReady
      - type: ContainersReady
        status: "False"
        reason: ContainersNotReady
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        imageID: ""
        name: {{ .name | Quote }}
        {{ if hasSuffix "-crashloop" .image }}
        ready: false
        restartCount: 1
        started: false
        lastState:
          terminated:
            exitCode: 1
            reason: Error
        state:
          waiting:
            reason: CrashLoopBackOff
            message: {{ printf "back-off 10s restarting failed container=%s pod=%s" .name $pod | Quote }}
        {{ else }}
        ready: true
        restartCount: 0
        started: true
        state:
          running: {}
        {{ end }}
      {{ end }}
      phase: Running
EOF
start kwok "$bin/kwok" --kubeconfig "$kc" --config "$stages" --config "$dir/kwok-logs.yaml" \
	--config "$dir/kwok-failures.yaml" \
	--manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
	--cidr 10.244.0.0/16 --node-ip 127.0.0.1 --node-lease-duration-seconds 40 \
	--server-address "127.0.0.1:$kwok_port" --node-port "$kwok_port" \
	--tls-cert-file "$dir/pki/kwok.crt" --tls-private-key-file "$dir/pki/kwok.key"
wait_for kwok "/healthz ok" curl -fsS --max-time 2 "http://127.0.0.1:$kwok_port/healthz"
kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $node
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: $node
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
status:
  addresses:
  - {type: InternalIP, address: 127.0.0.1}
  - {type: Hostname, address: $node}
  capacity: {cpu: "32", memory: 256Gi, pods: "1000"}
  allocatable: {cpu: "32", memory: 256Gi, pods: "1000"}
EOF
node_ready() {
	[[ $(kubectl get node "$node" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}') == True ]]
}
wait_for kwok "node $node Ready" node_ready
# What this cluster's kwok reproduces, for tests to check before they rely on it (a
# cluster started by an older up.sh lacks the failure stages).
kubectl -n kube-public create configmap k8sworker-testcluster \
	--from-literal=kwok-failing-images='-pullfail=ImagePullBackOff -crashloop=CrashLoopBackOff' >/dev/null

# ---- kube-controller-manager, kube-scheduler --------------------------------------------------
# No --authentication/--authorization-kubeconfig: their health endpoints are always
# allowed, and without a front-proxy CA on the apiserver those flags only add errors.
# Client rate limits well above the defaults (controller-manager 20 qps, burst 30;
# scheduler 50/100) and more StatefulSet workers (default 5): otherwise creating and
# binding the Pods of a thousand StatefulSets (the W1000 load run) is limited by these
# two clients, not by what is measured.
start kube-controller-manager "$bin/kube-controller-manager" \
	--kubeconfig "$kc" \
	--bind-address 127.0.0.1 --secure-port "$kcm_port" --leader-elect=false \
	--flex-volume-plugin-dir "$dir/flexvolume" \
	--controllers '*' --use-service-account-credentials=false \
	--service-account-private-key-file "$dir/pki/sa.key" --root-ca-file "$dir/pki/ca.crt" \
	--cluster-name k8sworker-test --profiling=false \
	--kube-api-qps 500 --kube-api-burst 1000 --concurrent-statefulset-syncs 20
start kube-scheduler "$bin/kube-scheduler" \
	--kubeconfig "$kc" \
	--bind-address 127.0.0.1 --secure-port "$scheduler_port" --leader-elect=false --profiling=false \
	--kube-api-qps 500 --kube-api-burst 1000
wait_for kube-controller-manager "/healthz ok" curl -fsSk --max-time 2 "https://127.0.0.1:$kcm_port/healthz"
wait_for kube-scheduler "/healthz ok" curl -fsSk --max-time 2 "https://127.0.0.1:$scheduler_port/healthz"
# The ServiceAccount controller has synced once "default" exists in "default".
wait_for kube-controller-manager "ServiceAccount default/default" kubectl -n default get serviceaccount default

# ---- Jaeger -----------------------------------------------------------------------------------
start jaeger "$bin/jaeger" --config "file:$here/jaeger.yaml"
wait_for jaeger "/status ok" curl -fsS --max-time 2 "http://127.0.0.1:$K8SWORKER_JAEGER_HEALTH_PORT/status"
wait_for jaeger "query API" curl -fsS --max-time 2 "http://127.0.0.1:$K8SWORKER_JAEGER_QUERY_PORT/api/services"

# ---- env --------------------------------------------------------------------------------------
cat >"$dir/env.tmp" <<EOF
# Test cluster environment; written by tests/cluster/up.sh.
export K8SWORKER_CLUSTER_DIR=$dir
export K8SWORKER_CLUSTER_BIN=$bin
export KUBECONFIG=$kc
export K8SWORKER_API_SERVER=$api
export K8SWORKER_CA_FILE=$dir/pki/ca.crt
export K8SWORKER_TEST_NODE=$node
export K8SWORKER_POD_LOG=$dir/pod.log
export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$K8SWORKER_OTLP_GRPC_PORT
export OTEL_EXPORTER_OTLP_PROTOCOL=grpc
export K8SWORKER_OTLP_HTTP_ENDPOINT=http://127.0.0.1:$K8SWORKER_OTLP_HTTP_PORT
export JAEGER_QUERY_URL=http://127.0.0.1:$K8SWORKER_JAEGER_QUERY_PORT
export K8SWORKER_JAEGER_HEALTH_URL=http://127.0.0.1:$K8SWORKER_JAEGER_HEALTH_PORT/status
EOF
mv "$dir/env.tmp" "$dir/env"
started=1
log "cluster ready; source $dir/env"
echo "$dir/env"
