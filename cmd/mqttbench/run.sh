#!/usr/bin/env bash
# make bench-mqtt: mqttbench against mosquitto 2 (Debian's), then against bifrost standalone built
# from this tree, one after the other on this machine, then the table of bifrost/mosquitto.
# Everything it starts it stops. Arguments go to both mqttbench runs, e.g.
#   cmd/mqttbench/run.sh --duration 5s --scenarios qos0,qos1
# Ports on 127.0.0.1: mosquitto 18830; bifrost MQTT 18831, gossip 18832, Raft 18833, gRPC 18834.
# The JSON results and the brokers' logs are kept in $BENCH_OUT (default bin/bench-mqtt).
set -euo pipefail

cd "$(dirname "$0")/../.."
GO=${GO:-go}
out=${BENCH_OUT:-bin/bench-mqtt}

command -v mosquitto >/dev/null || { echo "mosquitto missing: apt-get install -y mosquitto" >&2; exit 1; }
for port in 18830 18831 18832 18833 18834; do
	if [ -n "$(ss -Hlntu "sport = :$port")" ]; then
		echo "port $port on 127.0.0.1 is in use; stop what holds it" >&2
		exit 1
	fi
done

work=$(mktemp -d)
pids=()
# stop ends a broker: SIGTERM, then SIGKILL after 15s.
stop() {
	kill -TERM "$1" 2>/dev/null || return 0
	for _ in $(seq 150); do
		kill -0 "$1" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}
cleanup() {
	for pid in "${pids[@]}"; do stop "$pid"; done
	cp "$work"/*.log "$out/" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

mkdir -p bin "$out"
rm -f "$out/mosquitto.json" "$out/bifrost.json" "$out"/*.log
$GO build -o bin/bifrost ./cmd/bifrost
$GO build -o bin/mqttbench ./cmd/mqttbench
status=0

# Logging is cut to errors and warnings for both brokers: per-connection log lines would bill
# the connect and idle scenarios for logging.
cat >"$work/mosquitto.conf" <<EOF
listener 18830 127.0.0.1
allow_anonymous true
max_queued_messages 10000
persistence false
log_type error
log_type warning
connection_messages false
EOF
mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
mosquitto_pid=$!
pids+=("$mosquitto_pid")
echo "== mosquitto $(mosquitto -h | sed -n 's/^mosquitto version //p') (pid $mosquitto_pid)"
if ! bin/mqttbench --addr 127.0.0.1:18830 --pid "$mosquitto_pid" --name mosquitto --json "$out/mosquitto.json" "$@"; then
	status=1
	echo "-- mosquitto log (tail):" >&2
	tail -n 20 "$work/mosquitto.log" >&2
fi
stop "$mosquitto_pid"

# --mqtt-max-queued matches mosquitto's max_queued_messages.
bin/bifrost standalone --data "$work/bifrost-data" --mqtt 127.0.0.1:18831 \
	--mqtt-tls "" --mqtt-ws "" --mqtt-wss "" --http "" --api "" \
	--gossip 127.0.0.1:18832 --raft 127.0.0.1:18833 --grpc 127.0.0.1:18834 \
	--mqtt-max-queued 10000 --log-level warn >"$work/bifrost.log" 2>&1 &
bifrost_pid=$!
pids+=("$bifrost_pid")
echo
echo "== bifrost standalone $(git describe --always --dirty 2>/dev/null || echo "(not a git checkout)") (pid $bifrost_pid)"
if ! bin/mqttbench --addr 127.0.0.1:18831 --pid "$bifrost_pid" --name bifrost --json "$out/bifrost.json" "$@"; then
	status=1
	echo "-- bifrost log (tail):" >&2
	tail -n 20 "$work/bifrost.log" >&2
fi
stop "$bifrost_pid"

if [ -f "$out/mosquitto.json" ] && [ -f "$out/bifrost.json" ]; then
	echo
	echo "== bifrost / mosquitto"
	bin/mqttbench compare "$out/mosquitto.json" "$out/bifrost.json"
fi
exit "$status"
