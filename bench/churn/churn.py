# Publishes once to each of N new channels through the server API (16
# callers), then samples every broker until none holds replication state
# (or it stops changing for 30 s). Driven by retire.sh.
import http.client, json, os, re, sys, threading, time
n = int(sys.argv[1]); pids = sys.argv[2:5]; work = sys.argv[5]
def sample(label):
    row = []
    for i, pid in enumerate(pids):
        c = http.client.HTTPConnection("127.0.0.1", 9101 + i, timeout=5)
        c.request("GET", "/metrics"); body = c.getresponse().read().decode()
        held = re.search(r"^switchboard_replication_channels (\S+)", body, re.M)
        retired = re.search(r"^switchboard_replication_retired_total (\S+)", body, re.M)
        dropped = re.search(r"^switchboard_replication_heartbeats_dropped_total (\S+)", body, re.M)
        rss = int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{pid}/status").read()).group(1)) // 1024
        # utime + stime, in clock ticks (fields 14 and 15 of /proc/PID/stat).
        stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
        reg = os.path.getsize(f"{work}/data/b{i+1}/registers.jsonl") // 1024 if os.path.exists(f"{work}/data/b{i+1}/registers.jsonl") else 0
        row.append(f"b{i+1} held={held.group(1) if held else '?'} retired={retired.group(1) if retired else 0} rss={rss}MiB cpu={cpu:.1f}s reg={reg}KiB hb_dropped={dropped.group(1) if dropped else 0}")
    print(f"{label:>8}  " + " | ".join(row), flush=True)
    return row
sample("before")
errors = [0]; lock = threading.Lock()
def worker(k, threads):
    c = http.client.HTTPConnection("127.0.0.1", 8001, timeout=10)
    for i in range(k, n, threads):
        body = json.dumps({"channel": f"churn:{i}", "data": {"i": i}})
        c.request("POST", "/api/publish", body, {"Authorization": "apikey switchboard-dev-api-key", "Content-Type": "application/json"})
        r = c.getresponse(); r.read()
        if r.status != 200:
            with lock: errors[0] += 1
t0 = time.time()
ts = [threading.Thread(target=worker, args=(k, 16)) for k in range(16)]
[t.start() for t in ts]; [t.join() for t in ts]
dt = time.time() - t0
print(f"published {n} channels in {dt:.1f}s ({n/dt:.0f}/s), {errors[0]} refused", flush=True)
start = time.time(); last = None; same_since = time.time()
while time.time() - start < 240:
    row = sample(f"+{time.time()-start:.0f}s")
    held = [r.split()[1] for r in row]
    if held != last:
        last, same_since = held, time.time()
    if all(h == "held=0" for h in held) or time.time() - same_since > 30:
        break
    time.sleep(5)
