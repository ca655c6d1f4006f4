#!/usr/bin/env python3
"""The MCP server at /mcp against the official MCP Python SDK (PyPI `mcp`), run by .ci/run.

Starts `kpilens demo` on loopback and, as an agent would: lists the tools, lists the metrics,
queries one by region and checks every number equals POST /api/v1/query's for the same question
(raw and formatted as the metric says), checks a branch head's token sees only its branch, that a
bad request is a tool error naming the argument at fault, that a request without a token is
refused before any tool runs, and that each tool call is in the audit log.
"""

import asyncio
import http.client
import json
import re
import sys

from demo_server import start_demo
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

def http_json(port, method, path, token=None, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, json.loads(data) if data else None


def agent(port, token):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=create_mcp_http_client(headers=headers)))


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok  {what}")


async def run(port, users, audit):
    head, branch_head = users["head_office"], users["branch_head"]
    question = {
        "metrics": ["loan_balance", "overdue_ratio"],
        "dimensions": ["region"],
        "time": {"from": "2025-12-01", "to": "2025-12-31"},
    }
    async with agent(port, head["token"]) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        check(tools == {"list_metrics", "describe_metric", "query_metrics", "explain_query",
                        "list_dashboards", "get_dashboard_snapshot"}, f"the six tools are listed: {sorted(tools)}")

        listed = await client.call_tool("list_metrics", {})
        check(not listed.is_error, "list_metrics answers")
        metrics = {m["name"]: m for m in listed.structured_content["metrics"]}
        ratio = metrics["overdue_ratio"]
        check(ratio["kind"] == "ratio" and "region" in ratio["dimensions"] and "month" in ratio["grains"],
              "overdue_ratio: a ratio by region, with grains")
        check("never an average" in ratio["meaning"], f"a ratio says how it adds up: {ratio['meaning']}")

        described = await client.call_tool("describe_metric", {"metric": "overdue_ratio", "lang": "en"})
        _, catalog = http_json(port, "GET", "/api/v1/catalog")
        english = next(m for m in catalog["metrics"] if m["name"] == "overdue_ratio")["label"]["en"]
        check(described.structured_content["title"] == english,
              f"describe_metric gives the label in the language asked: {english}")
        check(all("label" in d for d in described.structured_content["dimensions"]), "with each dimension's label")

        answer = await client.call_tool("query_metrics", question)
        check(not answer.is_error, f"query_metrics answers: {answer.content[0].text[:200]}")
        got = answer.structured_content
        status, expected = http_json(port, "POST", "/api/v1/query", head["token"], question)
        check(status == 200, "the same question over HTTP")
        check(got["rows"] == expected["rows"] and got["totals"] == expected["totals"],
              f"every number equals the HTTP API's ({len(got['rows'])} regions)")
        names = [f["name"] for f in got["schema"]]
        i = names.index("overdue_ratio")
        decimals = got["schema"][i]["format"].get("decimals", 1)
        shown = [(r[i], f[i]) for r, f in zip(got["rows"], got["formatted"]) if r[i] is not None]
        check(shown and all(text == f"{raw * 100:,.{decimals}f}%" for raw, text in shown),
              f"a ratio is shown as a percent, as the metric says: {shown[0]}")
        j = names.index("loan_balance")
        check(all(re.fullmatch(r"¥[\d,.]+[万亿]?", r[j]) for r in got["formatted"]),
              f"balances in 万/亿: {got['formatted'][0][j]}")
        check("|" in answer.content[0].text, "the text content is a table an agent can read")

        bad = await client.call_tool("query_metrics", {"metrics": ["loan_balance"], "filters": [{"dimension": "region", "op": "like", "value": "x"}]})
        check(bad.is_error, "a malformed filter is a tool error")
        check(bad.structured_content["error"]["field"].startswith("filters[0]"),
              f"naming the argument at fault: {bad.structured_content['error']}")
        unknown = await client.call_tool("query_metrics", {"metrics": ["no_such_metric"]})
        check(unknown.is_error and unknown.structured_content["error"]["code"] == "unknown_metric",
              "an unknown metric is named")

        dashboards = await client.call_tool("list_dashboards", {})
        ids = [d["id"] for d in dashboards.structured_content["dashboards"]]
        check("executive" in ids, f"list_dashboards: {ids}")
        snap = await client.call_tool("get_dashboard_snapshot", {"dashboard": "executive"})
        check(not snap.is_error and snap.structured_content["tiles"], "a dashboard's tiles")
        tile = snap.structured_content["tiles"][0]
        check(tile["formatted"]["value"], f"tiles formatted: {tile['metric']} = {tile['formatted']['value']}")
        status, http_snap = http_json(port, "GET", "/api/v1/snapshot/executive", head["token"])
        check([t["value"] for t in snap.structured_content["tiles"]] == [t["value"] for t in http_snap["tiles"]],
              "the tiles' values equal GET /api/v1/snapshot's")
        plan = await client.call_tool("explain_query", question)
        check(not plan.is_error and "SELECT" in plan.structured_content["sql"].upper(), "explain_query gives the SQL")

    # A branch head: only the branch, whatever is asked.
    status, everyone = http_json(port, "POST", "/api/v1/query", head["token"], {**question, "dimensions": ["branch"]})
    async with agent(port, branch_head["token"]) as client:
        answer = await client.call_tool("query_metrics", {**question, "dimensions": ["branch"]})
        check(not answer.is_error, "the branch head's query answers")
        got = answer.structured_content
        b = [f["name"] for f in got["schema"]].index("branch")
        branches = {r[b] for r in got["rows"]}
        status, expected = http_json(port, "POST", "/api/v1/query", branch_head["token"], {**question, "dimensions": ["branch"]})
        check(got["rows"] == expected["rows"], "the same rows as the branch head gets over HTTP")
        check(len(branches) == 1 and len(everyone["rows"]) > 1,
              f"a branch head sees only the branch: {branches} of {len(everyone['rows'])}")

    # No token: refused by the gate, no tool runs.
    refused = None
    try:
        async with agent(port, None) as client:
            await client.call_tool("list_metrics", {})
    except BaseException as e:  # the SDK raises (an exception group from its task group) on the 401
        refused = e
    def leaves(e):
        return [x for sub in e.exceptions for x in leaves(sub)] if isinstance(e, BaseExceptionGroup) else [e]
    reasons = " ".join(repr(x) for x in leaves(refused)) if refused else ""
    # The SDK reports the 401 as an error response (the status itself is checked just below).
    check("error response" in reasons, f"a client without a token is refused: {reasons[:160]}")
    status, body = http_json(port, "POST", "/mcp", None, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    check(status == 401 and body["error"]["code"] == "missing_token", f"POST /mcp without a token: {status}")
    # A call no tool answers (an unknown tool, outside a session) is audited by what it asked.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/mcp", body=json.dumps(
        {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "no_such_tool", "arguments": {}}}),
        headers={"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                 "Authorization": f"Bearer {head['token']}"})
    conn.getresponse().read()
    conn.close()

    with open(audit) as f:
        lines = [json.loads(l) for l in f if l.strip()]
    mcp_lines = [l for l in lines if l["route"] == "/mcp"]
    calls = [l for l in mcp_lines if any(m.startswith("mcp:") and m[4:] in tools for m in l.get("metrics", []))]
    check(len(calls) == 9, f"each of the 9 tool calls is audited ({len(calls)} of {len(mcp_lines)} lines on /mcp name a tool)")
    check(any("mcp:tools/call:no_such_tool" in l.get("metrics", []) for l in mcp_lines),
          "an unknown tool is audited by its name")
    bare = [l for l in mcp_lines if l["method"] == "POST" and l["status"] != 401 and not l.get("metrics")]
    check(not bare, f"every POST /mcp line names what it asked: {bare[:2]}")
    check(any(l["principal"] == "branch_head" and "mcp:query_metrics" in l["metrics"] and "loan_balance" in l["metrics"]
              for l in calls), "with who called, the tool and the metrics")


def main():
    server, port, tmp = start_demo("kpilens-mcp-")
    audit = f"{tmp}/audit.log"
    try:
        _, users = http_json(port, "GET", "/api/v1/demo/users")
        asyncio.run(run(port, {u["role"]: u for u in users}, audit))
        print("the MCP client test passed")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
