"""The benchmark driver: the cockpit's questions asked of kpilens (its HTTP API, the real server),
DuckDB and Polars over the same Parquet files, in the same run, with a check that all three give
the same numbers. Prints a Markdown table. Run it through `benches/run.sh`, which builds kpilens,
generates the data and installs the peers.

Timings: kpilens "cold" is the first request of a query (empty result cache, warm OS page cache),
as the server measured it (`meta.elapsed_ms`) and as the client saw it over HTTP; "cached" is the
p50/p99 of repeated requests. Each query is also asked cold with `"rollups": false` (computed from
the models), so the table shows what the rollups buy in the same run. "read" is the bytes the
server process read from files during the cold request (`rchar` in /proc/PID/io: Parquet pages and
footers, page cache or disk). DuckDB and Polars: the first run and the median of three.

Then HTTP throughput on the executive overview's cached snapshot: `http_load` (benches/
http_load.rs) keeps N keep-alive clients busy for a while, once for full answers (200) and once
revalidating with If-None-Match (304).

Every phase has a deadline derived from the scale (`Deadlines`): a phase past it is recorded as
timed out in the table, every thread's stack of the server (gdb), its `/metrics` and its
`/api/v1/catalog/status` are saved next to the results, the server is stopped (and started again
for what follows), and the run goes on: a run always ends. The results (table, machine, build
profile, commit, date) are written to `docs/benchmarks/` as one file per run.
"""

import argparse
import datetime
import io
import platform
import shutil
import threading
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

import duckdb
import polars as pl

FROM, TO = "2024-01-01", "2025-12-31"


def kpilens_queries():
    return {
        "overdue ratio by region x month, 24 months": {
            "metrics": ["overdue_ratio"], "dimensions": ["region"],
            "time": {"grain": "month", "from": FROM, "to": TO}},
        "overdue ratio by branch, one month, one region": {
            "metrics": ["overdue_ratio"], "dimensions": ["branch"],
            "time": {"from": "2025-12-01", "to": "2025-12-31"},
            "filters": [{"dimension": "region", "op": "eq", "value": "西北"}]},
        "NPL ratio by product x quarter": {
            "metrics": ["npl_ratio"], "dimensions": ["product"],
            "time": {"grain": "quarter", "from": FROM, "to": TO}},
        "churn rate by segment x month": {
            "metrics": ["customer_churn_rate"], "dimensions": ["segment"],
            "time": {"grain": "month", "from": "2024-02-01", "to": TO}},
        "credit funnel by product": {
            "metrics": ["credit_funnel"], "dimensions": ["product"],
            "time": {"from": FROM, "to": TO}},
        "drill region > branch > team > RM (4 requests)": None,
        "executive dashboard (all panels)": None,
    }


# ---- the peers: the same questions in SQL (DuckDB) and in Polars -------------------------------

DUCKDB_SQL = {
    "overdue ratio by region x month, 24 months": f"""
        SELECT o.region AS k1, strftime(date_trunc('month', l.month_end), '%Y-%m-%d') AS k2,
               sum(CASE WHEN l.dpd > 0 THEN l.balance ELSE 0 END) / sum(l.balance) AS v
        FROM loan_month l JOIN customers c USING (customer_id) LEFT JOIN org o ON c.rm_id = o.rm_id
        WHERE l.month_end BETWEEN DATE '{FROM}' AND DATE '{TO}'
        GROUP BY 1, 2""",
    "overdue ratio by branch, one month, one region": """
        SELECT o.branch AS k1, '' AS k2,
               sum(CASE WHEN l.dpd > 0 THEN l.balance ELSE 0 END) / sum(l.balance) AS v
        FROM loan_month l JOIN customers c USING (customer_id) LEFT JOIN org o ON c.rm_id = o.rm_id
        WHERE l.month_end BETWEEN DATE '2025-12-01' AND DATE '2025-12-31' AND o.region = '西北'
        GROUP BY 1, 2""",
    # A quarter's balances are those at its last month_end (over all loans, not per product).
    "NPL ratio by product x quarter": f"""
        WITH ends AS (
            SELECT date_trunc('quarter', month_end) AS q, max(month_end) AS e FROM loan_month
            WHERE month_end BETWEEN DATE '{FROM}' AND DATE '{TO}' GROUP BY 1)
        SELECT ln.product AS k1, strftime(ends.q, '%Y-%m-%d') AS k2,
               sum(CASE WHEN l.classification IN ('substandard', 'doubtful', 'loss') THEN l.balance ELSE 0 END)
                 / sum(l.balance) AS v
        FROM loan_month l JOIN ends ON l.month_end = ends.e JOIN loans ln USING (loan_id)
        GROUP BY 1, 2""",
    # Active at the previous month's last snapshot and not active (or absent) at this month's.
    "churn rate by segment x month": f"""
        WITH ends AS (SELECT date_trunc('month', month_end) AS p, max(month_end) AS e
                      FROM customer_month GROUP BY 1),
             pairs AS (SELECT cur.p, prev.e AS e0, cur.e AS e1 FROM ends cur
                       JOIN ends prev ON prev.p = cur.p - INTERVAL 1 MONTH
                       WHERE cur.p BETWEEN DATE '2024-02-01' AND DATE '{TO}')
        SELECT c.segment AS k1, strftime(pairs.p, '%Y-%m-%d') AS k2,
               count(*) FILTER (WHERE s1.status IS DISTINCT FROM 'active') / count(*) AS v
        FROM pairs JOIN customer_month s0 ON s0.month_end = pairs.e0 AND s0.status = 'active'
        JOIN customers c ON c.customer_id = s0.customer_id
        LEFT JOIN customer_month s1 ON s1.customer_id = s0.customer_id AND s1.month_end = pairs.e1
        GROUP BY 1, 2""",
}


def polars_queries(data):
    scan = lambda t: pl.scan_parquet(os.path.join(data, t, "*.parquet"))  # noqa: E731
    lm, cust, org, loans = scan("loan_month"), scan("customers"), scan("org"), scan("loans")
    customer = cust.join(org, on="rm_id", how="left")
    d = lambda s: pl.lit(s).str.to_date()  # noqa: E731
    overdue = pl.when(pl.col("dpd") > 0).then(pl.col("balance")).otherwise(0)
    npl = (pl.when(pl.col("classification").is_in(["substandard", "doubtful", "loss"]))
           .then(pl.col("balance")).otherwise(0))

    def q1():
        return (lm.filter(pl.col("month_end").is_between(d(FROM), d(TO)))
                .join(customer, on="customer_id")
                .group_by(pl.col("region").alias("k1"),
                          pl.col("month_end").dt.truncate("1mo").dt.strftime("%Y-%m-%d").alias("k2"))
                .agg((overdue.sum() / pl.col("balance").sum()).alias("v")))

    def q2():
        return (lm.filter(pl.col("month_end").is_between(d("2025-12-01"), d("2025-12-31")))
                .join(customer, on="customer_id").filter(pl.col("region") == "西北")
                .group_by(pl.col("branch").alias("k1"))
                .agg((overdue.sum() / pl.col("balance").sum()).alias("v"))
                .with_columns(pl.lit("").alias("k2")))

    def q3():
        ranged = lm.filter(pl.col("month_end").is_between(d(FROM), d(TO)))
        ends = (ranged.group_by(pl.col("month_end").dt.truncate("1q").alias("q"))
                .agg(pl.col("month_end").max().alias("e")))
        return (ranged.join(ends, left_on="month_end", right_on="e")
                .join(loans.select("loan_id", "product"), on="loan_id")
                .group_by(pl.col("product").alias("k1"), pl.col("q").dt.strftime("%Y-%m-%d").alias("k2"))
                .agg((npl.sum() / pl.col("balance").sum()).alias("v")))

    return {
        "overdue ratio by region x month, 24 months": q1,
        "overdue ratio by branch, one month, one region": q2,
        "NPL ratio by product x quarter": q3,
    }


# ---- kpilens over HTTP -------------------------------------------------------------------------

class Deadlines:
    """Seconds each phase may take at a scale (1 = ~88k loan_month rows): a fixed part for a
    small run and a part growing with the rows, generous (about 3x what the 10M and 100M runs
    took when they ended)."""

    def __init__(self, scale):
        self.scale = max(scale, 1.0)

    def listen(self):       # process start until the port answers /healthz
        return 60 + 0.05 * self.scale

    def rollups(self):      # listening until /readyz says every rollup is current
        return 180 + 2.0 * self.scale

    def query(self):        # one request (a query, a dashboard, a drill step)
        return 60 + 0.3 * self.scale

    def load(self, seconds):  # one HTTP load run
        return seconds + 60


class TimedOut(Exception):
    pass


def http(base, path, body=None, timeout=600):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            payload = json.loads(r.read())
    except (TimeoutError, urllib.error.URLError) as e:
        if isinstance(e, urllib.error.HTTPError):
            raise
        if isinstance(e, TimeoutError) or isinstance(getattr(e, "reason", None), TimeoutError):
            raise TimedOut(f"{path}: no answer within {timeout:.0f} s") from e
        raise
    return payload, (time.perf_counter() - t) * 1e3


def health_ms(base, timeout=5):
    """How long /healthz takes to answer (None: not within `timeout`)."""
    try:
        return http(base, "/healthz", timeout=timeout)[1]
    except (TimedOut, OSError, urllib.error.URLError):
        return None


def dump(server, base, label, dump_dir):
    """What a timed-out phase leaves for a post-mortem: every thread's stack (gdb), /metrics and
    the catalog status, in files named after the phase. Returns the files written."""
    os.makedirs(dump_dir, exist_ok=True)
    stem = os.path.join(dump_dir, re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-"))
    written = []
    try:
        stacks = subprocess.run(["gdb", "-p", str(server.pid), "-batch", "-ex", "thread apply all bt"],
                                capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        stacks = f"gdb failed: {e}"
    for suffix, get in [("stacks.txt", lambda: stacks),
                        ("metrics.txt", lambda: urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()),
                        ("catalog-status.json", lambda: json.dumps(http(base, "/api/v1/catalog/status", timeout=10)[0], indent=1))]:
        try:
            text = get()
        except Exception as e:  # the server may be the thing that hangs: record that instead
            text = f"not answered: {e}"
        with open(f"{stem}.{suffix}", "w") as f:
            f.write(text)
        written.append(f"{stem}.{suffix}")
    print(f"TIMED OUT: {label}; stacks, metrics and status in {stem}.*", file=sys.stderr, flush=True)
    return written


def bytes_read(pid):
    with open(f"/proc/{pid}/io") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("rchar"))


def load(load_bin, base, path, clients, seconds, deadline, *headers):
    hostport = base.removeprefix("http://")
    try:
        out = subprocess.run([load_bin, hostport, path, str(clients), str(seconds), *headers],
                             check=True, capture_output=True, text=True, timeout=deadline).stdout
    except subprocess.TimeoutExpired as e:
        raise TimedOut(f"the HTTP load on {path} did not end within {deadline:.0f} s") from e
    return json.loads(out)


def kpilens_rows(result, metric):
    """{(k1, k2): value} from a query result: the first dimension and the period (or '')."""
    names = [f["name"] for f in result["schema"]]
    dims = [i for i, f in enumerate(result["schema"]) if f["role"] == "dimension"]
    period = names.index("period") if "period" in names else None
    v = names.index(metric)
    out = {}
    for row in result["rows"]:
        key = (row[dims[0]] if dims else "", row[period] if period is not None else "")
        out[key] = row[v]
    return out


def peer_rows(rows):
    return {(str(k1), k2 or ""): v for k1, k2, v in rows}


def same(a, b):
    """Same keys with values (non-null) equal to a relative 1e-9; rows one side has as null/empty
    and the other lacks are not differences."""
    keys = {k for k, v in a.items() if v is not None} | {k for k, v in b.items() if v is not None}
    for k in keys:
        x, y = a.get(k), b.get(k)
        if x is None or y is None or not math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12):
            return False, f"{k}: kpilens {x} vs peer {y}"
    return True, f"{len(keys)} values"


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class Server:
    """A kpilens server over the bench data: when it listened, when its rollups were current,
    and the slowest /healthz seen while they were being built."""

    def __init__(self, args, store, reload_ms):
        self.args, self.deadlines = args, args.deadlines
        started = time.perf_counter()
        self.log = open(args.server_log, "a")
        self.process = subprocess.Popen(
            [args.bin, "serve", "--no-auth", "--addr", "127.0.0.1:0", "--project", args.project,
             "--data", args.data, "--reload-ms", str(reload_ms), "--audit-log", os.path.join(args.data, "bench-audit.log"),
             "--rate-per-second", "1000000", "--rate-burst", "1000000", "--warm-up", "false",
             "--alerts-tick-ms", "0", "--rollup-store", store],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.pid = self.process.pid
        self.base = None
        found = threading.Event()

        def read_address():
            for line in self.process.stdout:
                # The first line ("kpilens at ...: opening") comes as the port answers.
                m = re.search(r"(?:on|at) (http://127\.0\.0\.1:\d+)", line)
                if m and self.base is None:
                    self.base = m.group(1)
                    found.set()
        threading.Thread(target=read_address, daemon=True).start()
        if not found.wait(self.deadlines.listen()):
            self.stop()
            raise TimedOut(f"the server did not print its address within {self.deadlines.listen():.0f} s")
        # Listening: the first /healthz answered.
        while health_ms(self.base) is None:
            if time.perf_counter() - started > self.deadlines.listen():
                raise TimedOut(f"the server did not answer /healthz within {self.deadlines.listen():.0f} s")
            time.sleep(0.05)
        self.listen_ms = (time.perf_counter() - started) * 1e3
        self.ready_ms = None
        self.worst_health_ms = None

    def wait_ready(self, label):
        """Until /readyz answers 200, polling /healthz meanwhile (its worst latency kept)."""
        started = time.perf_counter()
        worst = 0.0
        while True:
            h = health_ms(self.base)
            worst = max(worst, h if h is not None else float("inf"))
            try:
                http(self.base, "/readyz", timeout=5)
                break
            except urllib.error.HTTPError as e:
                if e.code != 503:
                    raise
            except TimedOut:
                pass
            if time.perf_counter() - started > self.deadlines.rollups():
                raise TimedOut(f"{label}: the rollups were not current within {self.deadlines.rollups():.0f} s")
            time.sleep(0.25)
        self.ready_ms = self.listen_ms + (time.perf_counter() - started) * 1e3
        self.worst_health_ms = worst
        return self

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


SNAPSHOT_TABLES = ["loan_month", "customer_month"]


def store_phases(args, store):
    """Start-up with nothing stored (the last month's files held back), then that month's files
    dropped in while the server runs: how long until every rollup is current again, and how each
    one got there. Leaves the store current for the main run, which starts by loading it."""
    held = os.path.join(args.data, ".held")
    restore_held(args.data, held)
    shutil.rmtree(store, ignore_errors=True)
    last = max(f for f in os.listdir(os.path.join(args.data, "loan_month")) if f.endswith(".parquet"))[:7]
    moved = []
    server = None
    phase = "store phase: start with an empty store"
    try:
        for t in SNAPSHOT_TABLES:
            os.makedirs(os.path.join(held, t), exist_ok=True)
            for f in sorted(os.listdir(os.path.join(args.data, t))):
                if f.startswith(last):
                    os.rename(os.path.join(args.data, t, f), os.path.join(held, t, f))
                    moved.append((t, f))
        server = Server(args, store, reload_ms=1000)
        server.wait_ready(phase)
        print(f"store phase: listening after {server.listen_ms:,.0f} ms, every rollup built over all but {last} "
              f"after {server.ready_ms:,.0f} ms; slowest /healthz meanwhile {server.worst_health_ms:,.1f} ms",
              file=sys.stderr, flush=True)
        before, _ = http(server.base, "/api/v1/catalog/status", timeout=args.deadlines.query())
        full_build = sum(r["build_ms"] for r in before["rollups"])
        phase = f"store phase: {last} appended"
        t0 = time.perf_counter()
        restore_held(args.data, held)
        moved = []
        worst = 0.0
        while True:
            time.sleep(0.2)
            h = health_ms(server.base)
            worst = max(worst, h if h is not None else float("inf"))
            status, _ = http(server.base, "/api/v1/catalog/status", timeout=args.deadlines.query())
            if status["catalog"]["loaded_at"] != before["catalog"]["loaded_at"] or any(
                    r["refresh"]["how"] != "built" or r["refresh"]["dates"] for r in status["rollups"]):
                try:
                    http(server.base, "/readyz", timeout=5)
                    status, _ = http(server.base, "/api/v1/catalog/status", timeout=args.deadlines.query())
                    break
                except (urllib.error.HTTPError, TimedOut):
                    pass
            if time.perf_counter() - t0 > args.deadlines.rollups():
                raise TimedOut(f"{phase}: not taken in within {args.deadlines.rollups():.0f} s")
        current_ms = (time.perf_counter() - t0) * 1e3
        return {"month": last, "listen_ms": server.listen_ms, "built_ms": server.ready_ms,
                "health_ms": max(server.worst_health_ms, worst), "full_build_ms": full_build,
                "current_ms": current_ms, "rollups": status["rollups"]}
    except TimedOut as e:
        args.timeouts.append((phase, str(e), dump(server.process, server.base, phase, args.dump_dir) if server and server.base else []))
        return None
    finally:
        if server:
            server.stop()
        for t, f in moved:
            os.rename(os.path.join(held, t, f), os.path.join(args.data, t, f))


def restore_held(data, held):
    """Puts back files a stopped run held back."""
    for t in SNAPSHOT_TABLES:
        d = os.path.join(held, t)
        for f in os.listdir(d) if os.path.isdir(d) else []:
            os.rename(os.path.join(d, f), os.path.join(data, t, f))


def run_with_deadline(fn, deadline, on_timeout=None):
    """fn() in a thread, waited for `deadline` seconds; past it `on_timeout()` (which should stop
    the work, e.g. DuckDB's interrupt) and TimedOut. A thread that does not stop is left behind
    as a daemon: the run goes on."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["error"] = e
    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(deadline)
    if t.is_alive():
        if on_timeout:
            on_timeout()
        raise TimedOut(f"no answer within {deadline:.0f} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--project", default=".")
    ap.add_argument("--scale", type=float, default=1, help="the data's scale (sets each phase's deadline)")
    ap.add_argument("--profile", default="dev", help="kpilens' build profile (for the results file)")
    ap.add_argument("--out-dir", default="docs/benchmarks", help="where the results file is written")
    ap.add_argument("--repeat", type=int, default=30, help="cached requests per query")
    ap.add_argument("--load-bin", help="http_load binary (throughput on cached snapshots)")
    ap.add_argument("--load-seconds", type=float, default=10)
    ap.add_argument("--load-clients", type=int, default=16)
    ap.add_argument("--peer-memory-gb", type=int, default=8, help="DuckDB's memory limit")
    ap.add_argument("--store-phases", type=int, default=1,
                    help="1: build with the last month held back, append it, then run from the stored rollups")
    args = ap.parse_args()
    started_at = datetime.datetime.now(datetime.timezone.utc)
    commit = git_commit()  # what was built for this run, not what is checked out at its end
    scale_name = f"{args.scale:g}"
    stem = f"{started_at:%Y-%m-%d-%H%M}-scale-{scale_name}-{args.profile}"
    args.dump_dir = os.path.join(args.out_dir, f"{stem}-dumps")
    args.deadlines = Deadlines(args.scale)
    args.timeouts = []  # (phase, why, files)
    args.server_log = os.path.join(args.data, "bench-server.log")
    report = io.StringIO()

    def say(*parts, **kw):
        print(*parts, **kw)
        print(*parts, **kw, file=report)

    store = os.path.join(args.data, ".kpilens-bench-store")
    append = None
    if args.store_phases:
        append = store_phases(args, store)

    def timed_out(phase, error, server):
        files = dump(server.process, server.base, phase, args.dump_dir) if server and server.base else []
        args.timeouts.append((phase, str(error), files))
        if server:
            server.stop()

    server = None
    try:
        server = Server(args, store, reload_ms=0)
        server.wait_ready("main run: start from the store")
    except TimedOut as e:
        if server is None:
            args.timeouts.append(("main run: start", str(e), []))
        else:
            # Still listening: the queries below answer from the models meanwhile.
            files = dump(server.process, server.base, "main run: rollups", args.dump_dir)
            args.timeouts.append(("main run: rollups current", str(e), files))
    startup_ms = server.listen_ms if server else None
    ready_ms = server.ready_ms if server else None
    status, _ = http(server.base, "/api/v1/catalog/status") if server else ({}, 0)
    rollups = status.get("rollups", [])
    not_built = status.get("rollups_not_built", [])

    con = duckdb.connect()
    # Bounded so that DuckDB spills rather than exhausting the machine the server shares (at
    # 100M rows its churn join otherwise grew until the kernel killed the run).
    con.execute(f"SET memory_limit = '{args.peer_memory_gb}GB'")
    for t in ["loan_month", "customers", "org", "loans", "customer_month"]:
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{os.path.join(args.data, t)}/*.parquet')")
    loan_rows = con.execute("SELECT count(*) FROM loan_month").fetchone()[0]
    pq = polars_queries(args.data)

    results = []
    dashboards = []
    throughput = []
    rss = None
    deadline = args.deadlines.query()
    ask = lambda path, body=None: http(server.base, path, body, timeout=deadline)  # noqa: E731
    for name, q in kpilens_queries().items() if server else []:
        row = {"query": name}
        results.append(row)
        try:
            if q is not None:
                read0 = bytes_read(server.pid)
                payload, wall = ask("/api/v1/query", q)
                row["read"] = (bytes_read(server.pid) - read0) / 2**20
                row["cold"], row["cold_http"] = payload["meta"]["elapsed_ms"], wall
                row["rollups"] = ", ".join(payload["meta"].get("rollups", [])) or "—"
                read0 = bytes_read(server.pid)
                try:
                    model, _ = ask("/api/v1/query", {**q, "rollups": False})
                except urllib.error.HTTPError as e:
                    # Refused (say, for memory): reported, not a crash of the whole run.
                    model = None
                    row["model_refused"] = f"{e.code} {json.loads(e.read() or b'{}').get('error', {}).get('code', '')}"
                    print(f"{name}: from the models refused: {row['model_refused']}", file=sys.stderr)
                row["read_model"] = (bytes_read(server.pid) - read0) / 2**20
                row["cold_model"] = model["meta"]["elapsed_ms"] if model else None
                cached = [ask("/api/v1/query", q) for _ in range(args.repeat)]
                kp = kpilens_rows(payload, q["metrics"][0])
                ok, why = same(kp, kpilens_rows(model, q["metrics"][0])) if model else (True, "")
                if not ok:
                    print(f"MISMATCH {name}: rollup vs model: {why}", file=sys.stderr)
                    row["rollup_mismatch"] = True
            elif name.startswith("drill"):
                base_q = {"metrics": ["overdue_ratio", "loan_balance"], "time": {"from": "2025-12-01", "to": TO}}
                path, steps, step_ms = {}, [], []
                t0 = time.perf_counter()
                for level in ["region", "branch", "team", "rm"]:
                    payload, _ = ask("/api/v1/query", {**base_q, "drill": {"hierarchy": "org", "path": path}})
                    step_ms.append(payload["meta"]["elapsed_ms"])
                    first = payload["rows"][0][0]
                    steps.append(first)
                    path = {**path, level: first}
                row["cold"], row["cold_http"] = sum(step_ms), (time.perf_counter() - t0) * 1e3
                row["steps"] = step_ms
                cached = []
                for _ in range(max(1, args.repeat // 3)):
                    p, total_ms, wall = {}, 0.0, 0.0
                    for level, member in zip(["region", "branch", "team", "rm"], steps):
                        payload, w = ask("/api/v1/query", {**base_q, "drill": {"hierarchy": "org", "path": p}})
                        total_ms += payload["meta"]["elapsed_ms"]
                        wall += w
                        p = {**p, level: member}
                    cached.append(({"meta": {"elapsed_ms": total_ms}}, wall))
                kp = None
            else:
                read0 = bytes_read(server.pid)
                payload, wall = ask("/api/v1/dashboards/executive")
                row["read"] = (bytes_read(server.pid) - read0) / 2**20
                row["cold"], row["cold_http"] = payload["meta"]["elapsed_ms"], wall
                failed = [p["id"] for p in payload["panels"] if p.get("error")]
                if failed:
                    print(f"executive dashboard: panels failed cold: {failed}", file=sys.stderr)
                row["rollups"] = ", ".join(sorted({r for p in payload["panels"]
                                                   for r in p.get("rollups", [])})) or "—"
                cached = [ask("/api/v1/dashboards/executive") for _ in range(args.repeat)]
                kp = None
                # Every other dashboard, cold, in the same server (filter lists and panels shared
                # with the executive overview are cached by now), and which panels read models.
                listing, _ = ask("/api/v1/dashboards")
                for d in listing:
                    try:
                        payload, wall = ask(f"/api/v1/dashboards/{d['id']}")
                    except urllib.error.HTTPError as e:
                        dashboards.append((d["id"], None, None, [], [f"the whole dashboard: HTTP {e.code}"]))
                        continue
                    from_models = [p["id"] for p in payload["panels"] if not p.get("rollups") and not p.get("error")]
                    failed = [p["id"] for p in payload["panels"] if p.get("error")]
                    dashboards.append((d["id"], payload["meta"]["elapsed_ms"], wall, from_models, failed))
        except TimedOut as e:
            row["timed_out"] = True
            timed_out(f"query: {name}", e, server)
            try:
                server = Server(args, store, reload_ms=0)
            except TimedOut as again:
                args.timeouts.append(("restart after a timeout", str(again), []))
                server = None
                break
            continue
        row["cached_p50"] = percentile([c[0]["meta"]["elapsed_ms"] for c in cached], 50)
        row["cached_p99"] = percentile([c[0]["meta"]["elapsed_ms"] for c in cached], 99)
        row["cached_http_p50"] = percentile([c[1] for c in cached], 50)

        for peer, run, stop_it in [
                ("duckdb", lambda n=name: con.execute(DUCKDB_SQL[n]).fetchall() if n in DUCKDB_SQL else None, con.interrupt),
                ("polars", lambda n=name: pq[n]().collect().select("k1", "k2", "v").rows() if n in pq else None, None)]:
            times, rows = [], None
            try:
                for _ in range(3):
                    t = time.perf_counter()
                    rows = run_with_deadline(run, deadline, stop_it)
                    times.append((time.perf_counter() - t) * 1e3)
                    if rows is None:
                        break
            except TimedOut as e:
                args.timeouts.append((f"{peer}: {name}", str(e), []))
                row[f"{peer}_timed_out"] = True
                continue
            if rows is None:
                continue
            row[f"{peer}_first"], row[f"{peer}_median"] = times[0], statistics.median(times)
            ok, why = same(kp, peer_rows(rows))
            row[f"{peer}_same"] = ok
            if not ok:
                print(f"MISMATCH {name} vs {peer}: {why}", file=sys.stderr)
    if server and args.load_bin:
        path = "/api/v1/snapshot/executive"
        try:
            with urllib.request.urlopen(urllib.request.Request(server.base + path), timeout=deadline) as r:
                etag = r.headers["ETag"]
            for label, headers in [("200, gzip", ["Accept-Encoding: gzip"]),
                                   ("304 (If-None-Match)", [f"If-None-Match: {etag}"])]:
                throughput.append((label, load(args.load_bin, server.base, path, args.load_clients,
                                               args.load_seconds, args.deadlines.load(args.load_seconds), *headers)))
        except (TimedOut, TimeoutError) as e:
            timed_out("HTTP load", e, server)
            server = None
    if server:
        try:
            with open(f"/proc/{server.pid}/status") as f:
                rss = next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024
        except OSError:
            pass
        server.stop()

    fmt = lambda x: "—" if x is None else (f"{x:,.0f}" if x >= 100 else f"{x:.1f}" if x >= 1 else f"{x:.2f}")  # noqa: E731
    say(f"# Benchmark, scale {scale_name}, {args.profile} build, {started_at:%Y-%m-%d %H:%M} UTC\n")
    say(f"- commit {commit}; kpilens {args.profile} build; DuckDB {duckdb.__version__}, Polars {pl.__version__}")
    say(f"- machine: {os.cpu_count()} cores, {mem_total_gib():.1f} GiB memory, {platform.platform()}")
    say(f"- command: `KPILENS_BENCH_PROFILE={args.profile} bash benches/run.sh {scale_name} --repeat {args.repeat}`; "
        f"deadlines: listen {args.deadlines.listen():.0f} s, rollups {args.deadlines.rollups():.0f} s, each request {deadline:.0f} s")
    say(f"- run took {(datetime.datetime.now(datetime.timezone.utc) - started_at).total_seconds() / 60:.1f} min\n")
    say(f"{loan_rows:,} loan_month rows; kpilens peak RSS {fmt(rss)} MiB (main run); listening after {fmt(startup_ms)} ms, "
        f"every rollup current (loaded from the store) after {fmt(ready_ms)} ms; times in ms, read in MiB")
    say("rollups: " + ("; ".join(f"{r['name']} {r['rows']:,} rows {r['refresh']['how']} in {fmt(r['build_ms'])} ms" for r in rollups) or "none") + "\n")
    for e in not_built:
        say(f"not built: {e['key']}: {e['reason'][:300]}")
    if append:
        say(f"\nstore phases: with an empty store (all but {append['month']}) listening after {fmt(append['listen_ms'])} ms, "
            f"every rollup built after {fmt(append['built_ms'])} ms (builds {fmt(append['full_build_ms'])} ms), "
            f"slowest /healthz during the builds {fmt(append['health_ms'])} ms; "
            f"{append['month']} appended: every rollup current after {fmt(append['current_ms'])} ms "
            f"({fmt(append['current_ms'] / max(append['full_build_ms'], 1) * 100)}% of the full build)")
        say("  " + "; ".join(f"{r['name']} {r['refresh']['how']} in {fmt(r['build_ms'])} ms"
                             + (f" ({r['refresh']['reason']})" if r['refresh']['how'] == 'built' else "")
                             for r in append["rollups"]) + "\n")
    say("| query | kpilens cold (server / HTTP) | rollup used | cold from the models | read (rollup / models) | cached p50 / p99 (server) | cached p50 HTTP | DuckDB first / median | Polars first / median | kpilens cold ÷ DuckDB | ÷ Polars | same numbers |")
    say("|---|---|---|---|---|---|---|---|---|---|---|---|")
    mismatches = 0
    for r in results:
        if r.get("timed_out"):
            say(f"| {r['query']} | **timed out** (> {deadline:.0f} s) | | | | | | | | | | |")
            continue
        ratio = lambda peer: fmt(r["cold"] / r[f"{peer}_median"]) if f"{peer}_median" in r else "—"  # noqa: E731
        peers = [p for p in ("duckdb", "polars") if f"{p}_same" in r]
        agree = "—" if not peers else ", ".join(f"{p}: {'yes' if r[f'{p}_same'] else 'NO'}" for p in peers)
        if r.get("rollup_mismatch"):
            agree += " (rollup ≠ model!)"
            mismatches += 1
        mismatches += sum(1 for p in peers if not r[f"{p}_same"])
        peer_cell = lambda p: "timed out" if r.get(f"{p}_timed_out") else f"{fmt(r.get(p + '_first'))} / {fmt(r.get(p + '_median'))}"  # noqa: E731
        say(f"| {r['query']} | {fmt(r['cold'])} / {fmt(r['cold_http'])} | {r.get('rollups', '—')} | {r['model_refused'] if 'model_refused' in r else fmt(r.get('cold_model'))} | "
            f"{fmt(r.get('read'))} / {fmt(r.get('read_model'))} | {fmt(r['cached_p50'])} / {fmt(r['cached_p99'])} | "
            f"{fmt(r['cached_http_p50'])} | {peer_cell('duckdb')} | {peer_cell('polars')} | {ratio('duckdb')} | {ratio('polars')} | {agree} |")
    for r in results:
        if "steps" in r:
            say("\ndrill steps cold (server ms): " + ", ".join(f"{l} {fmt(ms)}" for l, ms in zip(["region", "branch", "team", "RM"], r["steps"])))
    if dashboards:
        say("\n| dashboard (after the executive one) | cold (server / HTTP) | panels from the models | panels failed |")
        say("|---|---|---|---|")
        for d, ms, wall, from_models, failed in dashboards:
            say(f"| {d} | {fmt(ms)} / {fmt(wall)} | {', '.join(from_models) or 'none'} | {', '.join(failed) or 'none'} |")
    if throughput:
        say(f"\nCached snapshot of the executive overview over HTTP, {args.load_clients} keep-alive clients "
            f"for {fmt(args.load_seconds)} s (client and server on the same {os.cpu_count()} cores):\n")
        say("| answer | requests/s | p50 ms | p99 ms | errors |")
        say("|---|---|---|---|---|")
        for label, t in throughput:
            say(f"| {label} | {t['requests_per_second']:,.0f} | {t['p50_ms']:.2f} | {t['p99_ms']:.2f} | {t['errors']} |")
    say("\n## Phases past their deadline\n")
    if not args.timeouts:
        say("none: every phase ended within its deadline")
    for phase, why, files in args.timeouts:
        say(f"- {phase}: {why}" + (f" (dumps: {', '.join(os.path.relpath(f, args.out_dir) for f in files)})" if files else ""))
    os.makedirs(args.out_dir, exist_ok=True)
    out = os.path.join(args.out_dir, f"{stem}.md")
    with open(out, "w") as f:
        f.write(report.getvalue())
    print(f"\nresults written to {out}", file=sys.stderr)
    sys.exit(1 if mismatches else 0)


def git_commit():
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def mem_total_gib():
    with open("/proc/meminfo") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("MemTotal")) / 2**20


if __name__ == "__main__":
    main()
