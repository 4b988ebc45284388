#!/usr/bin/env bash
# Stops the test cluster started by up.sh: the processes recorded in <dir>/pids, in
# reverse start order (Jaeger, scheduler, controller-manager, kwok, apiserver, etcd),
# each with SIGTERM and, after a timeout, SIGKILL. Only recorded PIDs whose executable
# is still the recorded one are signalled. Then the state is removed except <dir>/logs,
# which stays for debugging until the next up.sh. Safe to run any number of times.
#
# Run it after the tests' own cleanup (namespace deletion) has finished: terminating
# Pods only go away while kwok runs.
set -euo pipefail

dir=${K8SWORKER_CLUSTER_DIR:-/tmp/k8sworker-testcluster}
grace=${K8SWORKER_STOP_TIMEOUT:-20} # seconds per process before SIGKILL

log() { printf '[down.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [[ ${K8SWORKER_CLUSTER_LOCKED:-} != 1 && -d $(dirname "$dir") ]]; then
	exec 9>"$dir.lock"
	flock -w 300 9 || { log "another up.sh/down.sh holds $dir.lock"; exit 1; }
fi

if [[ ! -s $dir/pids ]]; then
	log "nothing recorded in $dir; nothing to stop"
	exit 0
fi

# Running (not a zombie) and still the executable we started under that PID.
ours() { # PID EXE
	local state
	state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
	[[ -n $state && $state != Z ]] || return 1
	[[ $(readlink "/proc/$1/exe" 2>/dev/null) == "$(readlink -f "$2")" ]]
}

tac "$dir/pids" | while read -r name pid exe; do
	if ! ours "$pid" "$exe"; then
		log "$name (pid $pid) is not running"
		continue
	fi
	log "stopping $name (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || true
	deadline=$((SECONDS + grace))
	while ours "$pid" "$exe"; do
		if ((SECONDS >= deadline)); then
			log "$name (pid $pid) ignored SIGTERM for ${grace}s; sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			break
		fi
		sleep 0.1
	done
done

find "$dir" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} +
log "stopped; logs kept in $dir/logs"
