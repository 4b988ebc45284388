#!/usr/bin/env bash
# Builds the test cluster's binaries (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kwok, jaeger) from the pinned wrapper modules in go/, or
# reuses them from the cache.
#
# The binaries land in ${K8SWORKER_CACHE:-$HOME/.cache/k8sworker}/testcluster/<key>/bin,
# where <key> hashes everything that decides their content: the Go version, every
# wrapper go.mod/go.sum, the ldflags and this script. A warm run builds nothing.
# A cold run builds into a temporary directory and renames it into place, so an
# interrupted build never leaves a half-filled cache entry.
#
# Progress goes to stderr; the last line on stdout is the bin directory.
# Environment: GO (go command, default: go on PATH), K8SWORKER_CACHE.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mods=$here/go

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly

if [[ -z ${GO:-} ]]; then
	if command -v go >/dev/null 2>&1; then
		GO=go
	elif [[ -x /usr/local/go/bin/go ]]; then # the standard install location
		GO=/usr/local/go/bin/go
	else
		echo "build.sh: no Go toolchain found (set GO=/path/to/go)" >&2
		exit 1
	fi
fi

log() { printf '[build.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Version of a module as pinned by one of the wrapper modules.
modversion() { (cd "$mods/$1" && "$GO" list -m -f '{{.Version}}' "$2"); }

# ---- ldflags ---------------------------------------------------------------------------
# Kubernetes reads its version from these variables (hack/lib/version.sh stamps both
# packages); without them /version says v0.0.0-master. Derived from go.mod, so bumping
# the pin bumps the reported version.
k8s_version=$(modversion k8s k8s.io/kubernetes)          # e.g. v1.34.4
k8s_date=$(cd "$mods/k8s" && "$GO" list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)
k8s_major=${k8s_version#v}; k8s_major=${k8s_major%%.*}
k8s_minor=${k8s_version#v*.}; k8s_minor=${k8s_minor%%.*}
k8s_ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	k8s_ldflags+=" -X $p.gitVersion=$k8s_version -X $p.gitMajor=$k8s_major -X $p.gitMinor=$k8s_minor"
	k8s_ldflags+=" -X $p.gitCommit= -X $p.gitTreeState=clean -X $p.buildDate=$k8s_date"
done
kwok_version=$(modversion kwok sigs.k8s.io/kwok)
kwok_ldflags="-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${kwok_version#v}"
jaeger_version=$(modversion jaeger github.com/jaegertracing/jaeger)
jaeger_ldflags="-s -w -X github.com/jaegertracing/jaeger/internal/version.latestVersion=$jaeger_version"
etcd_ldflags="-s -w" # etcd reports its version from constants in go.etcd.io/etcd/api/v3/version

# ---- cache key -------------------------------------------------------------------------
key=$(
	{
		"$GO" version
		"$GO" env GOOS GOARCH
		for m in k8s etcd kwok jaeger; do
			echo "== $m"
			cat "$mods/$m/go.mod" "$mods/$m/go.sum"
		done
		echo "$k8s_ldflags" "$kwok_ldflags" "$jaeger_ldflags" "$etcd_ldflags"
		cat "${BASH_SOURCE[0]}"
	} | sha256sum | cut -c1-32
)
root=${K8SWORKER_CACHE:-$HOME/.cache/k8sworker}/testcluster
dest=$root/$key
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok jaeger)

complete() {
	local b
	for b in "${binaries[@]}"; do [[ -x $1/bin/$b ]] || return 1; done
	[[ -s $1/share/kwok-stages.yaml ]]
}

if complete "$dest"; then
	log "cache hit: $dest"
	echo "$dest/bin"
	exit 0
fi

# ---- cold build --------------------------------------------------------------------------
log "cache miss (key $key); building with $("$GO" version)"
mkdir -p "$root"
tmp=$(mktemp -d "$root/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin" "$tmp/share"

# Fetch every module first: a module the proxy does not serve fails here in seconds.
for m in k8s etcd kwok jaeger; do
	log "go mod download ($m)"
	(cd "$mods/$m" && "$GO" mod download)
done

# nice: the cores are shared with other compile jobs; -trimpath: no build paths in binaries.
gobuild() { # $1=module dir, $2=output name, $3=ldflags, $4=package
	local start=$SECONDS
	log "building $2 ($4)"
	(cd "$mods/$1" && nice -n 10 "$GO" build -trimpath -ldflags "$3" -o "$tmp/bin/$2" "$4")
	log "built $2 in $((SECONDS - start))s"
}
gobuild etcd etcd "$etcd_ldflags" go.etcd.io/etcd/server/v3
gobuild k8s kube-apiserver "$k8s_ldflags" k8s.io/kubernetes/cmd/kube-apiserver
gobuild k8s kube-controller-manager "$k8s_ldflags" k8s.io/kubernetes/cmd/kube-controller-manager
gobuild k8s kube-scheduler "$k8s_ldflags" k8s.io/kubernetes/cmd/kube-scheduler
gobuild k8s kubectl "$k8s_ldflags" k8s.io/kubernetes/cmd/kubectl
gobuild kwok kwok "$kwok_ldflags" sigs.k8s.io/kwok/cmd/kwok
gobuild jaeger jaeger "$jaeger_ldflags" github.com/jaegertracing/jaeger/cmd/jaeger

# kwok >= v0.8.0 has no built-in stages; render the module's "fast" set (node ready +
# lease heartbeat, pod ready, pod delete) from the same pinned version.
kwok_dir=$(cd "$mods/kwok" && "$GO" list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
log "rendering kwok stages from $kwok_dir/kustomize/stage/fast"
"$tmp/bin/kubectl" kustomize "$kwok_dir/kustomize/stage/fast" >"$tmp/share/kwok-stages.yaml"

if ! complete "$tmp"; then
	log "ERROR: build finished but some binaries are missing:"
	ls -l "$tmp/bin" "$tmp/share" >&2
	exit 1
fi
[[ -e $dest ]] && ! complete "$dest" && rm -rf "$dest" # a leftover from a broken cache
if mv -T "$tmp" "$dest" 2>/dev/null; then
	trap - EXIT
elif complete "$dest"; then
	log "another build filled $dest first; using it"
else
	log "ERROR: cannot move $tmp to $dest"
	exit 1
fi
log "done: $dest/bin"
echo "$dest/bin"
