"""Helpers of benches/e2e.sh: the checks on every run, the TLS clients, the counters
read from the proxies, and the report. `python3 benches/e2e.py COMMAND ARGS...`.

Every check exits non-zero with the reason on stderr; e2e.sh stops the whole run then.
"""
import json
import socket
import ssl
import statistics
import sys
import time
import urllib.request


def fail(msg):
    print(msg, file=sys.stderr)
    sys.exit(1)


# ---- one oha run --------------------------------------------------------------------------------
def oha(path, expect):
    """Checks an oha JSON result: every response 2xx and `expect` body bytes, no error other
    than the requests still in flight when the duration ended. Prints n seconds p50-ms p99-ms."""
    d, expect = json.load(open(path)), int(expect)
    codes, errors, s = d["statusCodeDistribution"], d["errorDistribution"], d["summary"]
    n = sum(codes.values())
    problems = []
    if n == 0:
        problems.append("no responses")
    bad = {k: v for k, v in codes.items() if not k.startswith("2")}
    if bad:
        problems.append(f"non-2xx responses {bad} among {n}")
    errs = {k: v for k, v in errors.items() if "deadline" not in k}
    if errs:
        problems.append(f"errors {errs}")
    if s["totalData"] != n * expect or (n and s["sizePerRequest"] != expect):
        problems.append(f"wrong response size: {s['totalData']} body bytes in {n} responses "
                        f"({s['sizePerRequest']} on average), {expect} expected each")
    if problems:
        fail("; ".join(problems))
    p = d["latencyPercentiles"]
    print(n, s["total"], "%.3f %.3f" % (p["p50"] * 1e3, p["p99"] * 1e3))


def stime(expect, *files):
    """Sums `openssl s_time` outputs: connections made and bytes read (headers included); each
    connection read exactly `expect` bytes, the answer to one HTTP/1.0 GET. Prints n."""
    n = read = 0
    for f in files:
        for line in open(f):
            # "1234 connections in 10.01s; 123.30 connections/user sec, bytes read 1506000"
            if "connections/user sec, bytes read" in line:
                n += int(line.split()[0])
                read += int(line.rsplit(" ", 1)[1])
    if n == 0:
        fail("openssl s_time made no connections")
    if read != n * int(expect):
        fail(f"wrong response size: {read} bytes read over {n} connections ({read / n:.1f} on "
             f"average), {expect} expected each (one 200 answer)")
    print(n)


def masked(plain, masked_path, *hidden):
    """Checks meshgate+m's answer against the upstream's: the same records, each `hidden` field
    (`customer_email`, `customer_phone`) masked (a pseudonym, the last four characters), no
    hidden value anywhere in the body, every other field as the upstream sent it. Prints its size."""
    text = open(masked_path, "rb").read()
    up, got = json.load(open(plain)), json.loads(text)
    if isinstance(up, dict):  # one record (BENCH_PATH=/orders/ID)
        if not isinstance(got, dict):
            fail("masked: the upstream answers one record, meshgate+m something else")
        up, got = [up], [got]
    if not isinstance(got, list) or len(got) != len(up):
        fail(f"masked: {len(got) if isinstance(got, list) else 'no'} records for the upstream's {len(up)}")
    for k in hidden:  # a path without the personal fields would pass with nothing masked
        if not any(k in a for a in up):
            fail(f"masked: no record of the upstream's answer has {k}: nothing to mask (BENCH_PATH?)")
    for a, b in zip(up, got):
        for k, v in a.items():
            if k not in hidden:
                if b.get(k) != v:
                    fail(f"masked: visible field {k} changed: {v!r} -> {b.get(k)!r}")
                continue
            if v.encode() in text:
                fail(f"masked: the hidden value {v!r} of {k} is in the masked body")
            m = b.get(k)
            ok = m.startswith("hmac-sha256:") if k == "customer_email" else (m == "*" * (len(v) - 4) + v[-4:])
            if not ok:
                fail(f"masked: {k} {v!r} became {m!r}")
    print(len(text))


# ---- counters the proxies keep --------------------------------------------------------------------
def counters(kind, url):
    """Responses since start: `2xx not-2xx aborted`. meshgate: meshgate_requests_total from /metrics,
    where a request the client gave up before its answer is a 4xx (the 499 it is audited as) of
    decision `allow` (forwarded) or `cancelled` (not yet decided): aborted; haproxy: its
    data frontend's hrsp_* from the stats CSV, where a request the client aborted before the
    answer (termination state CD, status -1) counts as hrsp_other."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    ok = bad = aborted = 0
    if kind == "meshgate":
        found = False
        for line in text.splitlines():
            if line.startswith("meshgate_requests_total{"):
                found = True
                v = int(float(line.rsplit(" ", 1)[1]))
                if 'class="2xx"' in line:
                    ok += v
                elif 'class="4xx"' in line and ('decision="allow"' in line or 'decision="cancelled"' in line):
                    aborted += v
                else:
                    bad += v
        if not found:
            fail(f"no meshgate_requests_total sample at {url}")
    else:
        lines = text.lstrip("# ").splitlines()
        head = lines[0].split(",")
        rows = [dict(zip(head, l.split(","))) for l in lines[1:]]
        fe = [r for r in rows if r["pxname"] == "fe" and r["svname"] == "FRONTEND"]
        if not fe:
            fail(f"no frontend fe in {url}")
        ok = int(fe[0]["hrsp_2xx"] or 0)
        bad = sum(int(fe[0][k] or 0) for k in ("hrsp_1xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx"))
        aborted = int(fe[0]["hrsp_other"] or 0)
    print(ok, bad, aborted)


def otlp_sink(port):
    """An OTLP/HTTP trace receiver that accepts every export and discards it (answers 200 with an empty
    ExportTraceServiceResponse, which is a valid empty protobuf message); GET /count prints
    `exports bytes` received so far."""
    import http.server
    seen = [0, 0]

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def reply(self, body, ctype):
            self.send_response(200)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            n = int(self.headers.get("content-length") or 0)
            self.rfile.read(n)
            seen[0] += 1
            seen[1] += n
            self.reply(b"", "application/x-protobuf")

        def do_GET(self):
            self.reply(f"{seen[0]} {seen[1]}\n".encode(), "text/plain")

        def log_message(self, *args):
            pass
    http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), H).serve_forever()


def metric(url, name):
    """The sum of a meshgate metric's samples (fails when it has none)."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    vals = [float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
            if l.startswith(name + " ") or l.startswith(name + "{")]
    if not vals:
        fail(f"no {name} sample at {url}")
    print(int(sum(vals)))


def trail(*files):
    """Counts a meshgate audit trail's request events: prints `answered cancelled`, where
    cancelled are the requests whose client went away before there was a response (status 499,
    client_closed_request; counted as aborted by `counters`). Fails on two events
    with one request id."""
    answered = cancelled = 0
    ids = set()
    for f in files:
        for line in open(f):
            e = json.loads(line)
            if e.get("type") != "request":
                continue
            if e["request_id"] in ids:
                fail(f"two audit events for request {e['request_id']}")
            ids.add(e["request_id"])
            if e.get("status") == 499 and e.get("error") == "client_closed_request":
                cancelled += 1
            else:
                answered += 1
    print(answered, cancelled)


# ---- TLS clients ----------------------------------------------------------------------------------
def context(certs, alpn=True):
    ctx = ssl.create_default_context(cafile=f"{certs}/ca.pem")
    ctx.load_cert_chain(f"{certs}/bench.pem", f"{certs}/bench-key.pem")
    if alpn:
        ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def connect(ctx, port, sess=None):
    raw = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1", session=sess)


def get(ctx, port, sess=None, close=False):
    """One keep-alive GET /orders (whatever BENCH_PATH says: resumption and idle-connection probes);
    returns the socket, the response read."""
    s = connect(ctx, port, sess)
    s.sendall(b"GET /orders HTTP/1.1\r\nHost: 127.0.0.1\r\n" + (b"Connection: close\r\n" if close else b"") + b"\r\n")
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            fail("connection closed before a response")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    if not head.split(b" ", 2)[1].startswith(b"2"):
        fail(f"answered {head.splitlines()[0].decode()}")
    cl = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
    while cl and len(body) < cl[0]:
        body += s.recv(65536)
    return s


def resume(port, certs):
    """Does the server resume a returning client's TLS session? Prints yes/no."""
    ctx = context(certs)
    s = get(ctx, port, close=True)
    s.recv(1)  # let TLS 1.3 tickets arrive
    sess = s.session
    s.close()
    print("yes" if get(ctx, port, sess, close=True).session_reused else "no")


def idle(port, certs, n):
    """Opens n connections, one keep-alive request each, prints n, then holds them idle."""
    ctx = context(certs)
    conns = [get(ctx, port) for _ in range(int(n))]
    print(len(conns), flush=True)
    time.sleep(300)


def raw(port, certs, path):
    """What `openssl s_time -www PATH` reads on one connection (no ALPN, an HTTP/1.0 GET, read
    to the end): prints the status and the byte count."""
    s = connect(context(certs, alpn=False), port)
    s.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
    buf = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ssl.SSLZeroReturnError:
            break
        if not chunk:
            break
        buf += chunk
    status = buf.split(b" ", 2)[1].decode() if buf.startswith(b"HTTP/") else "none"
    print(status, len(buf))


# ---- the runs' rows and the report ----------------------------------------------------------------
def row(target, mode, rnd, n, secs, p50, p99, ticks, a, b):
    """One result row: the run's figures and how busy each CPU was (from two /proc/stat samples,
    "total idle tasks" for CPU 0 then CPU 1)."""
    a, b = [list(map(int, x.split())) for x in (a, b)]
    d = [y - x for x, y in zip(a, b)]

    def pct(v, tot):
        return "%.0f" % max(0, 100 * v / max(1, tot))
    busy = [pct(d[0] - d[1], d[0]), pct(d[3] - d[4], d[3])]
    other0 = pct(d[2] - int(ticks), d[0])  # CPU 0 task time that was not the proxy's
    print("\t".join([target, mode, rnd, "%.0f" % (int(n) / float(secs)), p50, p99, ticks, n] + busy + [other0]))


PROXIES = ("nginx", "haproxy", "meshgate")


def is_proxy(t):
    """A proxy under test: a peer, meshgate, or a meshgate variant (meshgate+q, meshgate+t0.01, ...)."""
    return t in PROXIES or t.startswith("meshgate+")
MODES = ("h1-keepalive", "h2", "new-conn", "full-hs")


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def report(results, mem, tck, resumes, idle_conns, title, notes):
    rows = [l.rstrip("\n").split("\t") for l in open(results) if l.strip()]
    tck = int(tck)
    print(f"\n=== {title}")
    print(open(notes).read().rstrip())
    print("\nTHE FIGURE THAT MATTERS FOR A SIDECAR is the proxy's CPU time per request: a sidecar runs beside"
          "\nevery pod and that time is paid on every request of every pod; requests/s here only says how much"
          "\none pinned core serves before the load generator's core runs out.")
    runs = {}
    h = (f"{'target':<15} {'mode':<13} {'round':>5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
         f"{'CPU us/req':>11} {'cpu0%':>6} {'cpu1%':>6} {'other0%':>8}")
    print("\nevery run, in the order run (rounds alternate the proxies):\n" + h + "\n" + "-" * len(h))
    for t, mode, rnd, rps, p50, p99, ticks, n, c0, c1, o0 in rows:
        cpu = int(ticks) / tck * 1e6 / max(1, int(n)) if is_proxy(t) else None
        runs.setdefault((t, mode), []).append((float(rps), None if p99 == "-" else float(p99), cpu, int(o0),
                                               int(c0), int(c1)))
        print(f"{t:<15} {mode:<13} {rnd:>5} {'-' if t == 'background' else rps:>8} {p50:>8} {p99:>8} "
              f"{fmt(cpu, '.1f'):>11} {c0:>6} {c1:>6} {o0:>8}")
    noisy = sorted({f"{t} {m}" for t, m, *_, o0 in rows if int(o0) > 5})
    if noisy:
        print("WARNING: other processes used more than 5% of CPU 0 during:", ", ".join(noisy), "- rerun for clean figures")

    def med(t, mode, i):
        vs = [r[i] for r in runs.get((t, mode), []) if r[i] is not None]
        return statistics.median(vs) if vs else None
    h = f"{'target':<15} {'mode':<13} {'rounds':>6} {'req/s':>8} {'p99 ms':>8} {'CPU us/req':>11}"
    print("\nmedians over the rounds:\n" + h + "\n" + "-" * len(h))
    for (t, mode), rs in runs.items():
        if t == "background":
            continue
        print(f"{t:<15} {mode:<13} {len(rs):>6} {med(t, mode, 0):>8.0f} {fmt(med(t, mode, 1), '.3f'):>8} "
              f"{fmt(med(t, mode, 2), '.1f'):>11}")

    def ratio(a, b):
        return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}"
    peers = [p for p in ("nginx", "haproxy") if any(t == p for t, _ in runs)]
    print("\nmeshgate against each peer, ratios of the medians (req/s: >1 = meshgate better; p99 and"
          "\nCPU/req: <1 = meshgate better):")
    print(f"  {'':<24}" + "".join(f" | {'vs ' + p + ': req/s':>18} {'p99':>5} {'CPU/req':>7}" for p in peers))
    variants = list(dict.fromkeys(t for t, _ in runs if t.startswith("meshgate+")))
    for mg in ["meshgate"] + variants:
        for mode in MODES:
            if (mg, mode) not in runs:
                continue
            line = f"  {mg + ' ' + mode:<24}"
            for p in peers:
                line += " | " + " ".join(f"{ratio(med(mg, mode, i), med(p, mode, i)):>{w}}"
                                         for i, w in ((0, 18), (1, 5), (2, 7)))
            print(line)
    for v in variants:
        what = {"meshgate+q": "quotas on/off", "meshgate+m": "personal fields masked / not masked"}.get(
            v, f"spans sampled at {v[len('meshgate+t'):]} / tracing off")
        print(f"  {v} against meshgate ({what}):")
        for mode in [m for m in MODES if (v, m) in runs]:
            print(f"    {mode:<20} | " + "   ".join(f"{name} {ratio(med(v, mode, i), med('meshgate', mode, i))}"
                                               for name, i in (("req/s", 0), ("p99", 1), ("CPU/req", 2))))
    # A run whose load side ran out of CPU while meshgate's core idled measures the load's ceiling: its
    # req/s ratio says nothing about meshgate (full-hs does this: openssl s_time's handshakes cost more
    # than meshgate's).
    bound = [(t, mode, med(t, mode, 4), med(t, mode, 5)) for (t, mode) in runs if t == "meshgate" or t in variants]
    bound = [b for b in bound if b[3] >= 95 and b[2] <= 80]
    for t, mode, c0, c1 in bound:
        print(f"  LOAD-BOUND: {t} {mode}: CPU 0 (the proxy) {c0:.0f}% busy, CPU 1 (the load) {c1:.0f}%: its req/s"
              f" is the load's ceiling, not {t}'s; compare CPU per request")
    print("\nproxy CPU per request, medians in us:  " + "".join(f"{t:>12}" for t in ("nginx", "haproxy", "meshgate")))
    for mode in MODES:
        if ("meshgate", mode) in runs:
            print(f"  {mode:<37}" + "".join(f"{fmt(med(t, mode, 2), '.1f'):>12}" for t in ("nginx", "haproxy", "meshgate")))

    res = dict(l.split() for l in open(resumes))
    print("\nTLS session resumption offered to a returning client: "
          + ", ".join(f"{t} {res[t]}" for t in ("nginx", "haproxy", "meshgate") if t in res))
    mems = {}
    for l in open(mem):
        t, what, kb = l.rstrip("\n").split("\t")
        mems.setdefault((t, what), []).append(int(kb))
    targets = [t for t in ("nginx", "haproxy", "meshgate") if any(k[0] == t for k in mems)]
    print(f"\nmemory: VmRSS in MiB (nginx = master + worker; medians where measured in every round)"
          f"\n  {'':<46}" + "".join(f"{t:>10}" for t in targets))
    for what in dict.fromkeys(w for _, w in mems):
        vals = [mems.get((t, what)) for t in targets]
        print(f"  {what:<46}" + "".join(f"{statistics.median(v) / 1024:>10.1f}" if v else f"{'-':>10}" for v in vals))
    for t in targets:
        a = mems.get((t, "after the load runs"))
        b = [v for (tt, w), v in mems.items() if tt == t and w.startswith("with ") and "idle" in w]
        if a and b:
            print(f"  {t:<9} per idle keep-alive connection: {(b[0][0] - a[0]) / int(idle_conns):.1f} KiB")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"oha": oha, "stime": stime, "counters": counters, "metric": metric, "trail": trail, "resume": resume, "idle": idle,
     "raw": raw, "row": row, "report": report, "otlp-sink": otlp_sink, "masked": masked}[cmd](*args)
