#!/usr/bin/env bash
# make bench-cluster: mqttbench against a Bifrost cluster on this machine: three `bifrost store`
# processes (--bootstrap-expect 3) and one `bifrost frontend` apart from them, built from this tree,
# on loopback. The broker's CPU and memory are those of the four processes together.
# Everything it starts it stops. Arguments go to mqttbench, e.g.
#   cmd/mqttbench/cluster.sh --duration 5s --scenarios persistent
# Ports on 127.0.0.1: store i (1-3) gossip 1884i, Raft 1885i, gRPC 1886i; the frontend's MQTT
# 18870, gossip 18871, gRPC 18872.
# The JSON results and the processes' logs are kept in $BENCH_OUT (default bin/bench-cluster).
set -euo pipefail

cd "$(dirname "$0")/../.."
GO=${GO:-go}
out=${BENCH_OUT:-bin/bench-cluster}
scenarios=qos1,persistent,fanin,offline

ports=(18870 18871 18872)
for i in 1 2 3; do ports+=("1884$i" "1885$i" "1886$i"); done
for port in "${ports[@]}"; do
	if [ -n "$(ss -Hlntu "sport = :$port")" ]; then
		echo "port $port on 127.0.0.1 is in use; stop what holds it" >&2
		exit 1
	fi
done

work=$(mktemp -d)
pids=()
# stop ends a process: SIGTERM, then SIGKILL after 15s.
stop() {
	kill -TERM "$1" 2>/dev/null || return 0
	for _ in $(seq 150); do
		kill -0 "$1" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}
# The frontend (last started) stops first.
cleanup() {
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop "${pids[i]}"; done
	cp "$work"/*.log "$out/" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

mkdir -p bin "$out"
rm -f "$out/cluster.json" "$out"/*.log
$GO build -o bin/bifrost ./cmd/bifrost
$GO build -o bin/mqttbench ./cmd/mqttbench

# Logging is cut to warnings and errors, as in bench-mqtt.
for i in 1 2 3; do
	join=()
	[ "$i" = 1 ] || join=(--join 127.0.0.1:18841)
	bin/bifrost store --data "$work/store$i" --gossip "127.0.0.1:1884$i" --raft "127.0.0.1:1885$i" \
		--grpc "127.0.0.1:1886$i" --http "" --bootstrap-expect 3 "${join[@]}" \
		--log-level warn >"$work/store$i.log" 2>&1 &
	pids+=("$!")
done
# --mqtt-max-queued as in bench-mqtt.
bin/bifrost frontend --join 127.0.0.1:18841,127.0.0.1:18842,127.0.0.1:18843 \
	--gossip 127.0.0.1:18871 --grpc 127.0.0.1:18872 --mqtt 127.0.0.1:18870 \
	--mqtt-tls "" --mqtt-ws "" --mqtt-wss "" --http "" --api "" \
	--mqtt-max-queued 10000 --log-level warn >"$work/frontend.log" 2>&1 &
pids+=("$!")

echo "== bifrost 3 stores + 1 frontend $(git describe --always --dirty 2>/dev/null || echo "(not a git checkout)") (pids ${pids[*]})"
status=0
# mqttbench waits (--ready-timeout) until the cluster has bootstrapped and delivers to a
# persistent session, before the first scenario.
if ! bin/mqttbench --addr 127.0.0.1:18870 --pid "$(IFS=,; echo "${pids[*]}")" --name bifrost-cluster \
	--scenarios "$scenarios" --ready-timeout 120s --json "$out/cluster.json" "$@"; then
	status=1
	for log in store1 store2 store3 frontend; do
		echo "-- $log log (tail):" >&2
		tail -n 20 "$work/$log.log" >&2
	done
fi
exit "$status"
