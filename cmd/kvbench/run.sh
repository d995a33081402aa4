#!/usr/bin/env bash
# make bench-kv: kvbench against a 3-member etcd (Debian's etcd-server), then against 3 bifrost
# stores built from this tree, one after the other on this machine, then the table of bifrost/etcd.
# Everything it starts it stops, on failure and on Ctrl-C too. Arguments go to both kvbench runs, e.g.
#   cmd/kvbench/run.sh --duration 5s --clients 16
# Environment: BENCH_OUT (default bin/bench-kv) keeps the JSON results; BIFROST_FLAGS adds flags to
# every store (e.g. "--split-load 0"); BENCH_KV_API=router drives bifrost through a client-side
# router instead of its KV service; BENCH_KV_PPROF=1 starts the stores with --pprof (profiles on
# http://127.0.0.1:241{1,2,3}3/debug/pprof/); BENCH_KV_ONLY=etcd or bifrost runs one side.
# Ports on 127.0.0.1: etcd member i clients 2379i, peers 2380i; bifrost store i gossip 241i0,
# Raft 241i1, gRPC 241i2, HTTP 241i3 (i = 1, 2, 3).
set -euo pipefail

cd "$(dirname "$0")/../.."
GO=${GO:-go}
out=${BENCH_OUT:-bin/bench-kv}
only=${BENCH_KV_ONLY:-}
api=${BENCH_KV_API:-kv}

command -v etcd >/dev/null || { echo "etcd missing: apt-get install -y etcd-server" >&2; exit 1; }
for port in 23791 23792 23793 23801 23802 23803 24110 24111 24112 24113 24120 24121 24122 24123 24130 24131 24132 24133; do
	if [ -n "$(ss -Hlntu "sport = :$port")" ]; then
		echo "port $port on 127.0.0.1 is in use; stop what holds it" >&2
		exit 1
	fi
done

work=$(mktemp -d)
pids=()
# stop ends a server: SIGTERM, then SIGKILL after 15s.
stop() {
	kill -TERM "$1" 2>/dev/null || return 0
	for _ in $(seq 150); do
		kill -0 "$1" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}
stop_all() {
	for pid in "${pids[@]}"; do stop "$pid"; done
	pids=()
}
cleanup() {
	stop_all
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p bin "$out"
$GO build -o bin/bifrost ./cmd/bifrost
$GO build -o bin/kvbench ./cmd/kvbench
status=0
echo "load: $(uptime)"

if [ "$only" != bifrost ]; then
	rm -f "$out/etcd.json"
	cluster=etcd1=http://127.0.0.1:23801,etcd2=http://127.0.0.1:23802,etcd3=http://127.0.0.1:23803
	for i in 1 2 3; do
		# Defaults otherwise: the WAL is fsynced before a write is acknowledged.
		etcd --name "etcd$i" --data-dir "$work/etcd$i" \
			--listen-client-urls "http://127.0.0.1:2379$i" --advertise-client-urls "http://127.0.0.1:2379$i" \
			--listen-peer-urls "http://127.0.0.1:2380$i" --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
			--initial-cluster "$cluster" --initial-cluster-token kvbench --initial-cluster-state new \
			--logger zap --log-level warn >"$work/etcd$i.log" 2>&1 &
		pids+=("$!")
	done
	echo "== etcd $(etcd --version | sed -n 's/^etcd Version: //p'), 3 members (pids ${pids[*]})"
	if ! bin/kvbench --system etcd --name etcd --endpoints 127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793 \
		--pids "$(IFS=,; echo "${pids[*]}")" --json "$out/etcd.json" "$@"; then
		status=1
		for i in 1 2 3; do echo "-- etcd$i log (tail):" >&2; tail -n 10 "$work/etcd$i.log" >&2; done
	fi
	stop_all
	echo
fi

if [ "$only" != etcd ]; then
	rm -f "$out/bifrost.json"
	extra=()
	[ "${BENCH_KV_PPROF:-}" = 1 ] && extra+=(--pprof)
	# shellcheck disable=SC2206
	extra+=(${BIFROST_FLAGS:-})
	for i in 1 2 3; do
		join=()
		[ "$i" != 1 ] && join=(--join 127.0.0.1:24110)
		bin/bifrost store --data "$work/bifrost$i" --gossip "127.0.0.1:241${i}0" --raft "127.0.0.1:241${i}1" \
			--grpc "127.0.0.1:241${i}2" --http "127.0.0.1:241${i}3" --bootstrap-expect 3 "${join[@]}" \
			--log-level warn "${extra[@]}" >"$work/bifrost$i.log" 2>&1 &
		pids+=("$!")
	done
	echo "== bifrost $(git describe --always --dirty 2>/dev/null || echo "(not a git checkout)"), 3 stores, --api $api (pids ${pids[*]})"
	if ! bin/kvbench --system bifrost --name bifrost --api "$api" --endpoints 127.0.0.1:24112,127.0.0.1:24122,127.0.0.1:24132 \
		--pids "$(IFS=,; echo "${pids[*]}")" --json "$out/bifrost.json" "$@"; then
		status=1
		for i in 1 2 3; do echo "-- bifrost$i log (tail):" >&2; tail -n 10 "$work/bifrost$i.log" >&2; done
	fi
	stop_all
	# A full Raft receive queue (kvstore/internal/dbinit) drops messages: each a stall.
	echo "bifrost: $(cat "$work"/bifrost?.log | grep -c 'dropped an incoming message' || true) Raft messages dropped by full receive queues"
fi

if [ -f "$out/etcd.json" ] && [ -f "$out/bifrost.json" ]; then
	echo
	echo "== bifrost / etcd"
	bin/kvbench compare "$out/etcd.json" "$out/bifrost.json"
fi
exit "$status"
