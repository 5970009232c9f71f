#!/usr/bin/env python3
"""Exclusive breakdown of a ledgerd CPU profile into components.

usage: classify.py BINARY PROFILE [us_per_op]
Each sample goes to one bucket: the whole-stack rules first (stack growth,
GC, scheduler), then the innermost frame (leaf to root) that names a
known component.
"""
import subprocess, sys, re, collections

binary, profile = sys.argv[1], sys.argv[2]
us_per_op = float(sys.argv[3]) if len(sys.argv) > 3 else None
out = subprocess.run(["go", "tool", "pprof", "-traces", binary, profile],
                     capture_output=True, text=True).stdout

def parse_val(s):
    m = re.match(r"([\d.]+)(ns|us|µs|ms|s)$", s)
    v, u = float(m.group(1)), m.group(2)
    return v * {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1}[u]

traces = []
cur = None
for line in out.splitlines():
    if line.startswith("-----------+"):
        if cur:
            traces.append(cur)
        cur = None
        continue
    if cur is None:
        m = re.match(r"\s*([\d.]+(?:ns|us|µs|ms|s))\s+(\S.*)$", line)
        if m:
            cur = [parse_val(m.group(1)), [m.group(2).strip()]]
    else:
        f = line.strip()
        if f:
            cur[1].append(f)
if cur:
    traces.append(cur)

WHOLE = [  # (bucket, regex on any frame)
    ("runtime: goroutine stack growth (newstack/copystack)", r"^runtime\.(newstack|copystack)$"),
    ("runtime: GC (mark workers, assists, sweep)", r"^runtime\.(gcBgMarkWorker|gcAssistAlloc|bgsweep|bgscavenge|gcStart|sweepone|markroot)"),
]
INNER = [  # (bucket, regex), checked for each frame from the leaf up
    ("pgx: row scan (CollectRows/RowToStructByName)", r"^github\.com/jackc/pgx/v5\.(CollectRows|AppendRows|RowToStructByName|\(\*namedStructRowScanner\)|\(\*baseRows\)\.Scan|\(\*baseRows\)\.Values|\(\*poolRows\)\.Scan)"),
    ("pgx: send (Flush → write syscall)", r"^github\.com/jackc/pgx/v5/pgconn\.\(\*PgConn\)\.flushWithPotentialWriteReadDeadlock|^github\.com/jackc/pgx/v5/pgproto3\.\(\*Frontend\)\.Flush"),
    ("pgx: receive (read, bgreader, parse)", r"^github\.com/jackc/pgx/v5/pgconn/internal/bgreader|^github\.com/jackc/pgx/v5/pgproto3\.\(\*Frontend\)\.Receive|^github\.com/jackc/pgx/v5/pgconn\.\(\*PgConn\)\.(receiveMessage|peekMessage)"),
    ("pgx: pool acquire/release", r"^github\.com/jackc/pgx/v5/pgxpool\.\(\*Pool\)\.Acquire|^github\.com/jackc/pgx/v5/pgxpool\.\(\*Conn\)\.Release|^github\.com/jackc/pgx/v5/pgxpool\.\(\*poolRows\)\.Close|^github\.com/jackc/puddle"),
    ("pgx: other (exec, encode args, rows)", r"^github\.com/jackc/pgx"),
    ("interceptor: request log (go-grpc-middleware logging)", r"^github\.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging|^github\.com/ledgerd/ledgerd/server\.(requestLog|requestLogFields|slogAdapter)|^log/slog"),
    ("interceptor: metrics (grpcprom histogram+counters)", r"^github\.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus|^github\.com/prometheus/|^github\.com/ledgerd/ledgerd/server\.\(\*Metrics\)|^github\.com/ledgerd/ledgerd/server\.\(\*labelSet\)"),
    ("interceptor: deadline (context.WithTimeout)", r"^github\.com/ledgerd/ledgerd/server\.deadlineInterceptor"),
    ("interceptor: outcome", r"^github\.com/ledgerd/ledgerd/server\.(outcomeInterceptor|outcomeOf|reasonOf|requestKey|unaryInterceptors\.outcomeInterceptor)"),
    ("interceptor: recovery/selector/auth/ratelimit/undecodable", r"^github\.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/(recovery|selector)|^github\.com/ledgerd/ledgerd/server\.(rateLimit|auth|rejectUndecodable|unaryInterceptors\.(authInterceptor|rejectUndecodable))|^github\.com/ledgerd/ledgerd/server\.notHealthCheck"),
    ("coalescer", r"^github\.com/ledgerd/ledgerd/ledger\.\(\*coalescer"),
    ("ledger: namespace cache", r"^github\.com/ledgerd/ledgerd/ledger\.\(\*namespaceCache\)"),
    ("ledger: other (validation, decide, errors)", r"^github\.com/ledgerd/ledgerd/ledger\."),
    ("server: handlers + response building", r"^github\.com/ledgerd/ledgerd/server\.|^github\.com/ledgerd/ledgerd/gen/"),
    ("protobuf marshal/unmarshal (codec)", r"^google\.golang\.org/protobuf|^github\.com/ledgerd/ledgerd/server\.\(\*lenientCodec"),
    ("gRPC: transport (http2 framing, hpack, loopy writer, syscalls)", r"^google\.golang\.org/grpc/internal/transport|^golang\.org/x/net/http2"),
    ("gRPC: server (stream handling, recv/send msg)", r"^google\.golang\.org/grpc"),
    ("runtime: scheduler/netpoll/futex", r"^runtime\.(mcall|schedule|findRunnable|park_m|netpoll|goexit0|morestack|gopreempt|futex|notesleep|stopm|startm|wakep|mstart|sysmon|exitsyscall|entersyscall)"),
]

buckets = collections.Counter()
total = 0.0
for val, frames in traces:
    total += val
    b = None
    for name, rx in WHOLE:
        if any(re.search(rx, f) for f in frames):
            b = name
            break
    if b is None:
        for i, f in enumerate(frames):
            for name, rx in INNER:
                if re.search(rx, f):
                    b = name
                    break
            if b:
                if b.startswith("pgx:"):
                    for name, rx in INNER[:5]:
                        if any(re.search(rx, g) for g in frames[i:]):
                            b = name
                            break
                if any(re.match(r"^syscall\.(write|read|Syscall|RawSyscall)", g) for g in frames[:i]):
                    b += " — of which syscalls"
                break
    if b is None:
        b = "other: " + frames[-1] if frames else "other"
        b = "other (" + (frames[0] if frames else "?") + ")"
    buckets[b] += val

print(f"profile {profile}: {total:.2f}s sampled")
other = 0.0
for name, v in buckets.most_common():
    if name.startswith("other ("):
        other += v
        continue
    extra = f"  {v / total * us_per_op:6.1f} µs/op" if us_per_op else ""
    print(f"  {v / total * 100:5.1f}%  {v:6.2f}s{extra}  {name}")
extra = f"  {other / total * us_per_op:6.1f} µs/op" if us_per_op else ""
print(f"  {other / total * 100:5.1f}%  {other:6.2f}s{extra}  other (unclassified)")
if "-v" in sys.argv:
    for name, v in buckets.most_common(15):
        if name.startswith("other ("):
            print("     ", f"{v:.2f}s", name)
