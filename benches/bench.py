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
"""

import argparse
import shutil
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

def http(base, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    t = time.perf_counter()
    with urllib.request.urlopen(req) as r:
        payload = json.loads(r.read())
    return payload, (time.perf_counter() - t) * 1e3


def bytes_read(pid):
    with open(f"/proc/{pid}/io") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("rchar"))


def load(load_bin, base, path, clients, seconds, *headers):
    hostport = base.removeprefix("http://")
    out = subprocess.run([load_bin, hostport, path, str(clients), str(seconds), *headers],
                         check=True, capture_output=True, text=True).stdout
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


def start_server(args, store, reload_ms):
    """Starts kpilens over the data with its rollups stored in `store`; returns the process, its
    base URL and the milliseconds until it listened (the catalog and every rollup current)."""
    started = time.perf_counter()
    server = subprocess.Popen(
        [args.bin, "serve", "--no-auth", "--addr", "127.0.0.1:0", "--project", args.project,
         "--data", args.data, "--reload-ms", str(reload_ms), "--audit-log", os.path.join(args.data, "bench-audit.log"),
         "--rate-per-second", "1000000", "--rate-burst", "1000000", "--warm-up", "false",
         "--alerts-tick-ms", "0", "--rollup-store", store],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in server.stdout:
        m = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
        if m:
            return server, m.group(1), (time.perf_counter() - started) * 1e3
    sys.exit("kpilens did not start")


def stop(server):
    server.terminate()
    server.wait()


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
    try:
        for t in SNAPSHOT_TABLES:
            os.makedirs(os.path.join(held, t), exist_ok=True)
            for f in sorted(os.listdir(os.path.join(args.data, t))):
                if f.startswith(last):
                    os.rename(os.path.join(args.data, t, f), os.path.join(held, t, f))
                    moved.append((t, f))
        server, base, built_ms = start_server(args, store, reload_ms=1000)
        print(f"store phase: built over all but {last} in {built_ms:,.0f} ms", file=sys.stderr, flush=True)
        try:
            before, _ = http(base, "/api/v1/catalog/status")
            full_build = sum(r["build_ms"] for r in before["rollups"])
            t0 = time.perf_counter()
            restore_held(args.data, held)
            moved = []
            while True:
                time.sleep(0.2)
                status, _ = http(base, "/api/v1/catalog/status")
                if status["catalog"]["loaded_at"] != before["catalog"]["loaded_at"] or any(
                        r["refresh"]["how"] != "built" or r["refresh"]["dates"] for r in status["rollups"]):
                    break
                if time.perf_counter() - t0 > 3600:
                    sys.exit("the appended month was not taken in within an hour")
            current_ms = (time.perf_counter() - t0) * 1e3
        finally:
            stop(server)
    finally:
        for t, f in moved:
            os.rename(os.path.join(held, t, f), os.path.join(args.data, t, f))
    return {"month": last, "built_ms": built_ms, "full_build_ms": full_build, "current_ms": current_ms,
            "rollups": status["rollups"]}


def restore_held(data, held):
    """Puts back files a stopped run held back."""
    for t in SNAPSHOT_TABLES:
        d = os.path.join(held, t)
        for f in os.listdir(d) if os.path.isdir(d) else []:
            os.rename(os.path.join(d, f), os.path.join(data, t, f))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--project", default=".")
    ap.add_argument("--repeat", type=int, default=30, help="cached requests per query")
    ap.add_argument("--load-bin", help="http_load binary (throughput on cached snapshots)")
    ap.add_argument("--load-seconds", type=float, default=10)
    ap.add_argument("--load-clients", type=int, default=16)
    ap.add_argument("--peer-memory-gb", type=int, default=8, help="DuckDB's memory limit")
    ap.add_argument("--store-phases", type=int, default=1,
                    help="1: build with the last month held back, append it, then run from the stored rollups")
    args = ap.parse_args()

    store = os.path.join(args.data, ".kpilens-bench-store")
    append = None
    if args.store_phases:
        append = store_phases(args, store)
    server, base, startup_ms = start_server(args, store, reload_ms=0)
    print(f"kpilens listening after {startup_ms:,.0f} ms", file=sys.stderr, flush=True)
    status, _ = http(base, "/api/v1/catalog/status")
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
    try:
        for name, q in kpilens_queries().items():
            row = {"query": name}
            if q is not None:
                read0 = bytes_read(server.pid)
                payload, wall = http(base, "/api/v1/query", q)
                row["read"] = (bytes_read(server.pid) - read0) / 2**20
                row["cold"], row["cold_http"] = payload["meta"]["elapsed_ms"], wall
                row["rollups"] = ", ".join(payload["meta"].get("rollups", [])) or "—"
                read0 = bytes_read(server.pid)
                try:
                    model, _ = http(base, "/api/v1/query", {**q, "rollups": False})
                except urllib.error.HTTPError as e:
                    # Refused (say, for memory): reported, not a crash of the whole run.
                    model = None
                    row["model_refused"] = f"{e.code} {json.loads(e.read() or b'{}').get('error', {}).get('code', '')}"
                    print(f"{name}: from the models refused: {row['model_refused']}", file=sys.stderr)
                row["read_model"] = (bytes_read(server.pid) - read0) / 2**20
                row["cold_model"] = model["meta"]["elapsed_ms"] if model else None
                cached = [http(base, "/api/v1/query", q) for _ in range(args.repeat)]
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
                    payload, _ = http(base, "/api/v1/query", {**base_q, "drill": {"hierarchy": "org", "path": path}})
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
                        payload, w = http(base, "/api/v1/query", {**base_q, "drill": {"hierarchy": "org", "path": p}})
                        total_ms += payload["meta"]["elapsed_ms"]
                        wall += w
                        p = {**p, level: member}
                    cached.append(({"meta": {"elapsed_ms": total_ms}}, wall))
                kp = None
            else:
                read0 = bytes_read(server.pid)
                payload, wall = http(base, "/api/v1/dashboards/executive")
                row["read"] = (bytes_read(server.pid) - read0) / 2**20
                row["cold"], row["cold_http"] = payload["meta"]["elapsed_ms"], wall
                failed = [p["id"] for p in payload["panels"] if p.get("error")]
                if failed:
                    print(f"executive dashboard: panels failed cold: {failed}", file=sys.stderr)
                row["rollups"] = ", ".join(sorted({r for p in payload["panels"]
                                                   for r in p.get("rollups", [])})) or "—"
                cached = [http(base, "/api/v1/dashboards/executive") for _ in range(args.repeat)]
                kp = None
                # Every other dashboard, cold, in the same server (filter lists and panels shared
                # with the executive overview are cached by now), and which panels read models.
                listing, _ = http(base, "/api/v1/dashboards")
                for d in listing:
                    try:
                        payload, wall = http(base, f"/api/v1/dashboards/{d['id']}")
                    except urllib.error.HTTPError as e:
                        dashboards.append((d["id"], None, None, [], [f"the whole dashboard: HTTP {e.code}"]))
                        continue
                    from_models = [p["id"] for p in payload["panels"] if not p.get("rollups") and not p.get("error")]
                    failed = [p["id"] for p in payload["panels"] if p.get("error")]
                    dashboards.append((d["id"], payload["meta"]["elapsed_ms"], wall, from_models, failed))
            row["cached_p50"] = percentile([c[0]["meta"]["elapsed_ms"] for c in cached], 50)
            row["cached_p99"] = percentile([c[0]["meta"]["elapsed_ms"] for c in cached], 99)
            row["cached_http_p50"] = percentile([c[1] for c in cached], 50)

            for peer, run in [("duckdb", lambda n=name: con.execute(DUCKDB_SQL[n]).fetchall() if n in DUCKDB_SQL else None),
                              ("polars", lambda n=name: pq[n]().collect().select("k1", "k2", "v").rows() if n in pq else None)]:
                times, rows = [], None
                for _ in range(3):
                    t = time.perf_counter()
                    rows = run()
                    times.append((time.perf_counter() - t) * 1e3)
                    if rows is None:
                        break
                if rows is None:
                    continue
                row[f"{peer}_first"], row[f"{peer}_median"] = times[0], statistics.median(times)
                ok, why = same(kp, peer_rows(rows))
                row[f"{peer}_same"] = ok
                if not ok:
                    print(f"MISMATCH {name} vs {peer}: {why}", file=sys.stderr)
            results.append(row)
        throughput = []
        if args.load_bin:
            path = "/api/v1/snapshot/executive"
            req = urllib.request.Request(base + path)
            with urllib.request.urlopen(req) as r:
                etag = r.headers["ETag"]
            for label, headers in [("200, gzip", ["Accept-Encoding: gzip"]),
                                   ("304 (If-None-Match)", [f"If-None-Match: {etag}"])]:
                throughput.append((label, load(args.load_bin, base, path, args.load_clients,
                                               args.load_seconds, *headers)))
    finally:
        rss = None
        try:
            with open(f"/proc/{server.pid}/status") as f:
                rss = next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024
        except OSError:
            pass
        stop(server)

    fmt = lambda x: "—" if x is None else (f"{x:,.0f}" if x >= 100 else f"{x:.1f}" if x >= 1 else f"{x:.2f}")  # noqa: E731
    print(f"\n{loan_rows:,} loan_month rows; kpilens peak RSS {fmt(rss)} MiB (main run); start-up (listening, rollups {'loaded from the store' if append else 'built'}) {fmt(startup_ms)} ms; times in ms, read in MiB")
    print("rollups: " + ("; ".join(f"{r['name']} {r['rows']:,} rows {r['refresh']['how']} in {fmt(r['build_ms'])} ms" for r in rollups) or "none") + "\n")
    for e in not_built:
        print(f"not built: {e['key']}: {e['reason'][:300]}")
    if append:
        print(f"store phases: start-up with an empty store (all but {append['month']}) {fmt(append['built_ms'])} ms, rollups built in {fmt(append['full_build_ms'])} ms; "
              f"{append['month']} appended: every rollup current after {fmt(append['current_ms'])} ms "
              f"({fmt(append['current_ms'] / append['full_build_ms'] * 100)}% of the full build)")
        print("  " + "; ".join(f"{r['name']} {r['refresh']['how']} in {fmt(r['build_ms'])} ms"
                               + (f" ({r['refresh']['reason']})" if r['refresh']['how'] == 'built' else "")
                               for r in append["rollups"]) + "\n")
    print("| query | kpilens cold (server / HTTP) | rollup used | cold from the models | read (rollup / models) | cached p50 / p99 (server) | cached p50 HTTP | DuckDB first / median | Polars first / median | kpilens cold ÷ DuckDB | ÷ Polars | same numbers |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    mismatches = 0
    for r in results:
        ratio = lambda peer: fmt(r["cold"] / r[f"{peer}_median"]) if f"{peer}_median" in r else "—"  # noqa: E731
        peers = [p for p in ("duckdb", "polars") if f"{p}_same" in r]
        agree = "—" if not peers else ", ".join(f"{p}: {'yes' if r[f'{p}_same'] else 'NO'}" for p in peers)
        if r.get("rollup_mismatch"):
            agree += " (rollup ≠ model!)"
            mismatches += 1
        mismatches += sum(1 for p in peers if not r[f"{p}_same"])
        print(f"| {r['query']} | {fmt(r['cold'])} / {fmt(r['cold_http'])} | {r.get('rollups', '—')} | {r['model_refused'] if 'model_refused' in r else fmt(r.get('cold_model'))} | "
              f"{fmt(r.get('read'))} / {fmt(r.get('read_model'))} | {fmt(r['cached_p50'])} / {fmt(r['cached_p99'])} | "
              f"{fmt(r['cached_http_p50'])} | {fmt(r.get('duckdb_first'))} / {fmt(r.get('duckdb_median'))} | "
              f"{fmt(r.get('polars_first'))} / {fmt(r.get('polars_median'))} | {ratio('duckdb')} | {ratio('polars')} | {agree} |")
    for r in results:
        if "steps" in r:
            print("\ndrill steps cold (server ms): " + ", ".join(f"{l} {fmt(ms)}" for l, ms in zip(["region", "branch", "team", "RM"], r["steps"])))
    if dashboards:
        print("\n| dashboard (after the executive one) | cold (server / HTTP) | panels from the models | panels failed |")
        print("|---|---|---|---|")
        for d, ms, wall, from_models, failed in dashboards:
            print(f"| {d} | {fmt(ms)} / {fmt(wall)} | {', '.join(from_models) or 'none'} | {', '.join(failed) or 'none'} |")
    if throughput:
        print(f"\nCached snapshot of the executive overview over HTTP, {args.load_clients} keep-alive clients "
              f"for {fmt(args.load_seconds)} s (client and server on the same {os.cpu_count()} cores):\n")
        print("| answer | requests/s | p50 ms | p99 ms | errors |")
        print("|---|---|---|---|---|")
        for label, t in throughput:
            print(f"| {label} | {t['requests_per_second']:,.0f} | {t['p50_ms']:.2f} | {t['p99_ms']:.2f} | {t['errors']} |")
    sys.exit(1 if mismatches else 0)


if __name__ == "__main__":
    main()
