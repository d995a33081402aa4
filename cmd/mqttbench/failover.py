#!/usr/bin/env python3
"""Failover: 3 stores + 1 frontend on loopback under mqttbench's persistent load; the inbox
range's leader is paused (SIGSTOP) or killed (SIGKILL); report how long deliveries stopped
(frontend's bifrost_mqtt_messages_delivered_total flat) and whether publishers were disconnected."""
import json, os, signal, subprocess, sys, time, urllib.request, shutil, tempfile
# Usage (from the repository, after go build -o bin/bifrost ./cmd/bifrost and
# go build -o bin/mqttbench ./cmd/mqttbench): cmd/mqttbench/failover.py pause|kill
# Ports on 127.0.0.1: stores 2884i (gossip), 2885i (Raft), 2886i (gRPC), 2889i (HTTP);
# the frontend 28870 (MQTT), 28871-28873. Logs are kept in a temporary directory it prints.
mode = sys.argv[1] if len(sys.argv) > 1 else "pause"
if mode not in ("pause", "kill"): raise SystemExit("usage: failover.py pause|kill")
root = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
work = tempfile.mkdtemp(prefix="bifrost-failover-" + mode + "-")
print("logs in", work)
procs = {}
def start(name, args):
    f = open(f"{work}/{name}.log", "w")
    procs[name] = subprocess.Popen([f"{root}/bin/bifrost"] + args, stdout=f, stderr=f)
for i in (1, 2, 3):
    join = [] if i == 1 else ["--join", "127.0.0.1:28841"]
    start(f"s{i}", ["store", "--data", f"{work}/d{i}", "--gossip", f"127.0.0.1:2884{i}", "--raft", f"127.0.0.1:2885{i}",
                    "--grpc", f"127.0.0.1:2886{i}", "--http", f"127.0.0.1:2889{i}", "--bootstrap-expect", "3", "--log-level", "warn"] + join)
start("f", ["frontend", "--join", "127.0.0.1:28841", "--gossip", "127.0.0.1:28871", "--grpc", "127.0.0.1:28872",
            "--mqtt", "127.0.0.1:28870", "--mqtt-tls", "", "--mqtt-ws", "", "--mqtt-wss", "", "--api", "", "--http", "127.0.0.1:28873", "--log-level", "warn"])
def metric(name):
    try:
        for line in urllib.request.urlopen("http://127.0.0.1:28873/metrics", timeout=1).read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    except Exception:
        return None
    return None
bench = subprocess.Popen([f"{root}/bin/mqttbench", "--addr", "127.0.0.1:28870", "--scenarios", "persistent", "--duration", "40s",
                          "--warmup", "1s", "--payload", "100", "--ready-timeout", "120s", "--stall-timeout", "60s"],
                         stdout=open(f"{work}/bench.out", "w"), stderr=subprocess.STDOUT)
try:
    t0 = time.time()
    while (metric("bifrost_mqtt_messages_delivered_total") or 0) < 50000:
        if time.time() - t0 > 150: raise SystemExit("no load")
        time.sleep(0.2)
    rs = json.loads(subprocess.check_output([f"{root}/bin/bifrost", "admin", "--addr", "127.0.0.1:28861", "--json", "ranges"]))
    rs = rs if isinstance(rs, list) else rs.get("ranges", [])
    cl = json.loads(subprocess.check_output([f"{root}/bin/bifrost", "admin", "--addr", "127.0.0.1:28861", "--json", "cluster"]))
    cl = cl if isinstance(cl, list) else cl.get("members", [])
    inbox = [r for r in rs if r["keyspace"].lower().endswith("inbox")]
    leader = inbox[0]["leader"]
    grpc = [m["grpc"] for m in cl if m.get("store_id") == leader][0]
    victim = "s" + grpc[-1]
    print(f"inbox ranges {[r['id'] for r in inbox]}, leader store {leader} = {victim}; {mode} it for 10 s")
    samples = []
    def sample(until):
        while time.time() < until:
            samples.append((time.time(), metric("bifrost_mqtt_messages_delivered_total")))
            time.sleep(0.05)
    sample(time.time() + 2)
    tf = time.time()
    p = procs[victim]
    p.send_signal(signal.SIGSTOP if mode == "pause" else signal.SIGKILL)
    sample(tf + 10)
    if mode == "pause": p.send_signal(signal.SIGCONT)
    sample(tf + 14)
    # longest flat stretch after the fault
    longest, last_t, last_v, first_resume = 0, None, None, None
    for t, v in samples:
        if v is None: continue
        if last_v is None or v > last_v:
            if last_t is not None and t >= tf:
                longest = max(longest, t - max(last_t, tf))
            if t > tf and first_resume is None and last_v is not None and v > last_v and (t - tf) > 0.05:
                pass
            last_t, last_v = t, v
    print(f"longest stretch without a delivery after the fault: {longest:.2f} s")
    bench.wait(timeout=120)
finally:
    for p in procs.values():
        try: p.send_signal(signal.SIGCONT); p.terminate()
        except Exception: pass
    for p in procs.values():
        try: p.wait(timeout=15)
        except Exception: p.kill()
    if bench.poll() is None: bench.kill()
print(open(f"{work}/bench.out").read()[-600:])
os.system(f"grep -h 'routing a message failed\\|inbox' {work}/f.log | cut -c1-200 | sort | uniq -c | sort -rn | head -5")
