#!/usr/bin/env python3
"""A bounded soak under hostile load (standard library only), run by .ci/run.

Starts `kpilens demo` on loopback and, for KPILENS_SOAK_SECONDS (default 45), runs every attack of
the hostile-load review at once:
  - slow uploads: POST /api/v1/query headers with Content-Length 100000, then a byte a second;
  - half-sent headers and idle connections, more than the server's connection cap;
  - one principal flooding the engine with distinct cold queries;
  - day-grain, 20-metric queries over the whole allowed range with both comparisons;
  - requests without a token with 60 KB paths, and a user's queries with 250 KB filter values
    (the audit trail's flood: every line must stay short);
  - one principal exporting a cached answer of thousands of rows, as CSV and as a workbook, at once;
  - hostile definition files dropped into the project while it reloads (brackets nested behind a
    quote, a file over the size cap), then removed: the last good catalog keeps serving;
  - sockets pipelining 300 requests for the cockpit's biggest file in one write, never reading;
  - one RM opening event streams without end;
while the head office and an analyst keep asking cached and cold questions. It fails unless
every question of theirs is answered (200), /healthz stays fast, the server stays within its
memory bound, the audit chain verifies with every line short, the hostile files are refused by
name, and the server exits cleanly on SIGTERM.
"""

import glob
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from demo_server import BIN, start_demo

SECONDS = float(os.environ.get("KPILENS_SOAK_SECONDS", "45"))
MEMORY_MB, CACHE_MB, ALLOWANCE_MB = 512, 64, 512
SERVERS = []


def rss_mib(pid, field="VmHWM"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def request(port, method, path, token=None, body=None, timeout=30):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def main():
    server, port, tmp = start_demo(
        "kpilens-soak-", "--memory-mb", str(MEMORY_MB), "--cache-mb", str(CACHE_MB),
        "--max-connections", "256", "--header-timeout-ms", "2000", "--body-timeout-ms", "3000",
        "--max-connections-per-address", "96", "--write-timeout-ms", "3000", "--reload-ms", "500",
        project=None,
    )
    SERVERS.append(server)
    users = json.loads(request(port, "GET", "/api/v1/demo/users")[1])
    by_role = {u["role"]: u["token"] for u in users}
    head, analyst, rm = by_role["head_office"], by_role["analyst"], by_role["rm"]
    catalog = json.loads(request(port, "GET", "/api/v1/catalog")[1])
    # Metrics a day grain over three centuries makes huge to compose (running totals are refused
    # at once for so many periods, which would only turn the attacker into a rate-limit flood of
    # the analyst it shares with the questions below).
    plain = [m["name"] for m in catalog["metrics"]
             if m["type"] not in ("funnel", "cohort", "churn", "cumulative")
             and "region" in m["dimensions"]][:20]

    stop = time.monotonic() + SECONDS
    failures, latencies, health = [], [], []
    slowest = []  # (seconds, the question, when in the run)
    lock = threading.Lock()

    def attacker(fn):
        def run():
            while time.monotonic() < stop:
                try:
                    fn()
                except OSError:
                    time.sleep(0.05)
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

    def slow_upload():
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall((f"POST /api/v1/query HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {rm}\r\n"
                   "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n").encode())
        try:
            while time.monotonic() < stop:
                s.sendall(b" ")
                time.sleep(1)
        finally:
            s.close()

    def attacker_socket():
        # From another loopback address than the users' (Linux answers all of 127/8): the
        # server gives each address its share of the connections.
        return socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.2", 0))

    def half_headers():
        socks = []
        for _ in range(100):
            s = attacker_socket()
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            socks.append(s)
        time.sleep(3)
        for s in socks:
            s.close()

    counter = [0]

    def flood():
        with lock:
            counter[0] += 1
            n = counter[0]
        day = 1 + n % 28
        request(port, "POST", "/api/v1/query", rm, {
            "metrics": ["loan_balance", "overdue_ratio"], "dimensions": ["branch"],
            "time": {"grain": "day", "from": "2024-01-01", "to": f"2025-{1 + n % 12:02d}-{day:02d}"}})

    def huge():
        request(port, "POST", "/api/v1/query", analyst, {
            "metrics": plain, "dimensions": ["region"],
            "time": {"grain": "day", "from": "1900-01-01", "to": "2200-12-31"},
            "compare": ["previous_period", "same_period_last_year"]}, timeout=60)

    def never_reads():
        socks = []
        for _ in range(40):
            s = attacker_socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(0.2)
            try:
                s.sendall(b"GET /vendor/echarts.min.js HTTP/1.1\r\nHost: x\r\nAccept-Encoding: br\r\n\r\n" * 300)
            except OSError:
                pass
            socks.append(s)
        time.sleep(5)
        for s in socks:
            s.close()

    def stream_hog():
        socks = []
        for _ in range(40):
            s = attacker_socket()
            s.sendall(f"GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {rm}\r\n\r\n".encode())
            socks.append(s)
        time.sleep(10)
        for s in socks:
            s.close()

    def audit_flood():
        request(port, "GET", "/api/v1/query/" + "x" * 60_000)

    huge_value = "x" * 250_000

    def audit_flood_signed():
        request(port, "POST", "/api/v1/query", rm, {
            "metrics": ["loan_balance"], "dimensions": ["branch"],
            "filters": [{"dimension": "region", "op": "eq", "value": huge_value}]})

    exported = {"metrics": ["loan_balance", "overdue_ratio"], "dimensions": ["branch"],
                "time": {"grain": "day", "from": "2024-01-01", "to": "2024-12-31"}}

    def export_flood():
        for fmt in ("csv", "xlsx"):
            request(port, "POST", "/api/v1/export", rm, {"format": fmt, "query": exported}, timeout=60)

    hostile_file = os.path.join(tmp, "project", "metrics", "zz_hostile.yaml")
    refused_files = set()

    def hostile_definitions():
        # Each file in turn until the catalog status names it refused (at most 10 s), then gone.
        texts = ['metrics:\n  a."b: ' + "[" * 100_000, "# a comment line, many times\n" * 60_000]
        for text in texts:
            with open(hostile_file, "w") as f:
                f.write(text)
            until = time.monotonic() + 10
            while time.monotonic() < until:
                try:
                    status = json.loads(request(port, "GET", "/api/v1/catalog/status", head)[1])
                except (OSError, ValueError):
                    time.sleep(0.25)
                    continue
                error = status["catalog"].get("last_error") or {}
                reasons = [e.get("reason", "") for e in error.get("errors", [])
                           if e.get("file") == "metrics/zz_hostile.yaml"]
                if reasons:
                    refused_files.add(reasons[0][:80])
                    break
                time.sleep(0.25)
            os.remove(hostile_file)
            time.sleep(1.5)

    threads = [attacker(slow_upload) for _ in range(8)]
    threads += [attacker(half_headers) for _ in range(3)]
    threads += [attacker(flood) for _ in range(4)]
    threads += [attacker(huge) for _ in range(2)]
    threads += [attacker(audit_flood), attacker(audit_flood_signed)]
    threads += [attacker(export_flood) for _ in range(3)]
    threads += [attacker(hostile_definitions)]
    threads += [attacker(never_reads) for _ in range(2)]
    threads += [attacker(stream_hog)]

    questions = [
        (head, {"metrics": ["loan_balance", "overdue_ratio"], "dimensions": ["region"]}),
        (head, {"metrics": ["customer_churn_rate"], "dimensions": ["region"],
                "time": {"grain": "month", "from": "2025-01-01", "to": "2025-12-31"}}),
        (analyst, {"metrics": ["aum"], "dimensions": ["branch"]}),
    ]
    i = 0
    while time.monotonic() < stop:
        token, q = questions[i % len(questions)]
        i += 1
        t = time.monotonic()
        try:
            status, body = request(port, "POST", "/api/v1/query", token, q)
        except OSError as e:
            status, body = 0, str(e).encode()
        latencies.append(time.monotonic() - t)
        if not slowest or latencies[-1] > slowest[0]:
            slowest[:] = [latencies[-1], q, time.monotonic() - (stop - SECONDS)]
        if status != 200:
            failures.append((status, body[:200]))
        t = time.monotonic()
        status, _ = request(port, "GET", "/healthz")
        health.append(time.monotonic() - t)
        if status != 200:
            failures.append((status, b"/healthz"))
        time.sleep(0.2)

    for t in threads:
        t.join(timeout=60)
    metrics_now = len(json.loads(request(port, "GET", "/api/v1/catalog")[1])["metrics"])
    peak = rss_mib(server.pid)
    server.send_signal(signal.SIGTERM)
    try:
        code = server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        code = "hung"
    verify = subprocess.run([BIN, "audit", "verify", "--file", f"{tmp}/audit.log"],
                            capture_output=True, text=True)
    longest_line = max((len(line) for f in glob.glob(f"{tmp}/audit.log*")
                        for line in open(f, "rb")), default=0)
    latencies.sort()
    health.sort()
    bound = MEMORY_MB + CACHE_MB + ALLOWANCE_MB
    print(f"soak {SECONDS:.0f} s: {len(latencies)} questions, {len(failures)} failed; "
          f"p50 {latencies[len(latencies) // 2] * 1e3:.0f} ms, max {latencies[-1] * 1e3:.0f} ms; "
          f"/healthz max {health[-1] * 1e3:.0f} ms; peak RSS {peak:.0f} MiB (bound {bound}); "
          f"exit {code}; audit: {verify.stdout.strip() or verify.stderr.strip()}, longest line "
          f"{longest_line:,} bytes; hostile definitions refused: {sorted(refused_files)}")
    print(f"slowest question: {slowest[0]:.1f} s at {slowest[2]:.0f} s into the run: {json.dumps(slowest[1])}")
    problems = []
    if failures:
        problems.append(f"failed questions: {failures[:5]}")
    if health[-1] > 2.0:
        problems.append(f"/healthz took {health[-1]:.1f} s")
    if peak > bound:
        problems.append(f"peak RSS {peak:.0f} MiB over {bound}")
    if code != 0:
        problems.append(f"exit {code} on SIGTERM")
    if verify.returncode != 0:
        problems.append("the audit chain does not verify")
    if longest_line > 8192:
        problems.append(f"an audit line of {longest_line:,} bytes")
    if len(refused_files) < 2:
        problems.append(f"hostile definitions not both refused by name: {sorted(refused_files)}")
    if metrics_now != len(catalog["metrics"]):
        problems.append(f"{metrics_now} metrics served after the hostile files, {len(catalog['metrics'])} before")
    if problems:
        print("FAILED: " + "; ".join(problems), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    try:
        main()
    finally:
        # A failure above must not leave the server running.
        for child in SERVERS:
            if child.poll() is None:
                child.kill()
