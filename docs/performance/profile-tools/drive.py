#!/usr/bin/env python3
"""Run ledgerbench, and during each measured phase take CPU and alloc
profiles of ledgerd (ledgerd side) and the CPU split between ledgerd,
postgres and ledgerbench (both sides).

usage: drive.py TAG WORKLOADS [extra ledgerbench args...]
"""
import os, re, subprocess, sys, threading, time, json, urllib.request

TAG = sys.argv[1]
WORKLOADS = sys.argv[2]
EXTRA = sys.argv[3:]
OUT = f"/tmp/prof/{TAG}"
os.makedirs(OUT, exist_ok=True)
PPROF = "127.0.0.1:16060"
WARMUP = 2
DURATION = 20
SETTLE = 3
PROFSECS = 12
HZ = os.sysconf("SC_CLK_TCK")

cmd = ["/tmp/lb", "--ledgerd-bin", os.environ.get("LEDGERD_BIN", "/tmp/ledgerd"), "--workers", "32",
       "--duration", f"{DURATION}s", "--warmup", f"{WARMUP}s",
       "--workloads", WORKLOADS, "--json", f"{OUT}/bench.json",
       f"--ledgerd-flag=--pprof-addr={PPROF}"] + EXTRA
print("$", " ".join(cmd), flush=True)
lb = subprocess.Popen(cmd, cwd="/tmp/head", stderr=subprocess.PIPE, stdout=open(f"{OUT}/report.txt", "w"), text=True)

def proc_cpu(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
        fields = s[s.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / HZ  # utime, stime
    except Exception:
        return 0.0

def all_procs():
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
            comm = s[s.index("(") + 1:s.rindex(")")]
            fields = s[s.rindex(")") + 2:].split()
            out[int(d)] = (comm, int(fields[1]), (int(fields[11]) + int(fields[12])) / HZ)
        except Exception:
            pass
    return out

def total_cpu():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v[:8]) / HZ, idle / HZ

def snapshot(ledgerd_pid):
    procs = all_procs()
    groups = {"ledgerd": 0.0, "postgres": 0.0, "ledgerbench": 0.0, "other": 0.0}
    for pid, (comm, ppid, cpu) in procs.items():
        if pid == ledgerd_pid:
            groups["ledgerd"] += cpu
        elif comm == "postgres":
            groups["postgres"] += cpu
        elif pid == lb.pid:
            groups["ledgerbench"] += cpu
    tot, idle = total_cpu()
    return groups, tot, idle, procs

def window(label, ledgerd_pid, profile):
    time.sleep(WARMUP + SETTLE)
    g0, t0, i0, p0 = snapshot(ledgerd_pid)
    w0 = time.time()
    threads = []
    if profile:
        def fetch(url, path):
            with urllib.request.urlopen(url, timeout=PROFSECS + 30) as r, open(path, "wb") as f:
                f.write(r.read())
        threads = [
            threading.Thread(target=fetch, args=(f"http://{PPROF}/debug/pprof/profile?seconds={PROFSECS}", f"{OUT}/{label}.cpu.pb.gz")),
            threading.Thread(target=fetch, args=(f"http://{PPROF}/debug/pprof/allocs?seconds={PROFSECS}", f"{OUT}/{label}.allocs.pb.gz")),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        time.sleep(PROFSECS)
    g1, t1, i1, p1 = snapshot(ledgerd_pid)
    w1 = time.time()
    # postgres processes that came or went: count only those present in both
    pg = sum(p1[p][2] - p0[p][2] for p in p1 if p in p0 and p1[p][0] == "postgres")
    res = {"label": label, "wall": w1 - w0,
           "ledgerd_cpu": g1["ledgerd"] - g0["ledgerd"],
           "postgres_cpu": pg,
           "ledgerbench_cpu": g1["ledgerbench"] - g0["ledgerbench"],
           "machine_busy": (t1 - t0) - (i1 - i0), "machine_total": t1 - t0}
    res["other_cpu"] = res["machine_busy"] - res["ledgerd_cpu"] - res["postgres_cpu"] - res["ledgerbench_cpu"]
    with open(f"{OUT}/{label}.cpu-split.json", "w") as f:
        json.dump(res, f, indent=1)
    print("SPLIT", json.dumps(res), flush=True)

ledgerd_pid = None
log = open(f"{OUT}/stderr.txt", "w")
workers = []
for line in lb.stderr:
    log.write(line); log.flush()
    m = re.search(r"ledgerd \(pid (\d+)\)", line)
    if m:
        ledgerd_pid = int(m.group(1))
    m = re.search(r"ledgerbench: (\w+) (ledgerd|raw) 32 workers: warming up", line)
    if m:
        label = f"{m.group(1)}-{m.group(2)}"
        t = threading.Thread(target=window, args=(label, ledgerd_pid, m.group(2) == "ledgerd"))
        t.start(); workers.append(t)
    if "op/s, p50" in line:
        print(line.strip(), flush=True)
for t in workers:
    t.join()
print("rc", lb.wait())
