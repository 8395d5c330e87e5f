#!/usr/bin/env python3
"""A small stand-in for the ServiceNow Table API, for checking and timing the Singer tap.

Serves N generated `incident` records (stdlib only) the way a real instance does:

* GET /api/now/table/<table>, /api/now/v1/table/<table>, /api/now/v2/table/<table>
  (only `incident` exists; any other table answers 400 "Invalid table").
* Basic auth (default admin/admin); otherwise 401 with ServiceNow's error body.
* Body `{"result": [...]}`; all values are strings, dates `yyyy-MM-dd HH:mm:ss` (UTC),
  reference fields `{"link": ".../api/now/table/<target>/<sys_id>", "value": "<sys_id>"}` or ""
  when empty (bare sys_id with sysparm_exclude_reference_link=true). Keys in name order.
* `sysparm_limit` (default 10000), `sysparm_offset` (default 0), `sysparm_fields` (unknown names
  ignored), `sysparm_no_count=true`, `sysparm_exclude_reference_link=true`. `sysparm_query` is
  accepted but not evaluated: rows are always ordered by sys_updated_on, then sys_id.
* `X-Total-Count`, and an RFC 8288 `Link` header with rel="first", "prev" (also on the first
  page, with a negative offset, as a real instance does), "next" (only while more rows exist)
  and "last", echoing the caller's other parameters. No Link header for a single page.
* HTTP/1.1 keep-alive.

It prints `listening http://HOST:PORT` on stdout once ready (use --port 0 for a free port) and
counts requests: GET /__stats answers {"requests": n, "table_requests": n} (not counted), and
the totals go to stderr on SIGTERM / SIGINT. With --log, each request line goes to stderr.

    python3 scripts/fake_servicenow.py --records 5000 --port 0 --log
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import random
import signal
import sys
import threading
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode, urlsplit

DATE = "%Y-%m-%d %H:%M:%S"
TABLE = "incident"
DEFAULT_LIMIT = 10000

# Column -> referenced table (None for plain string/date columns); the simulator's incident table.
COLUMNS: dict[str, str | None] = {
    "active": None,
    "assigned_to": "sys_user",
    "assignment_group": "sys_user_group",
    "caller_id": "sys_user",
    "closed_at": None,
    "closed_by": "sys_user",
    "cmdb_ci": "cmdb_ci",
    "company": "core_company",
    "description": None,
    "number": None,
    "opened_at": None,
    "opened_by": "sys_user",
    "resolved_at": None,
    "resolved_by": "sys_user",
    "short_description": None,
    "state": None,
    "sys_class_name": None,
    "sys_created_by": None,
    "sys_created_on": None,
    "sys_id": None,
    "sys_mod_count": None,
    "sys_updated_by": None,
    "sys_updated_on": None,
}

WORDS = (
    "email printer vpn laptop password outage slow network disk license login wifi "
    "phone badge server backup database latency certificate"
).split()


def sys_id(kind: str, n: int) -> str:
    return hashlib.md5(f"{kind}:{n}".encode()).hexdigest()


def generate(n: int, seed: int) -> list[dict[str, str]]:
    """N incident records (raw values), sorted by (sys_updated_on, sys_id)."""
    rng = random.Random(seed)
    users = [sys_id("user", i) for i in range(200)]
    groups = [sys_id("group", i) for i in range(20)]
    companies = [sys_id("company", i) for i in range(30)]
    cis = [sys_id("ci", i) for i in range(500)]
    base = datetime(2024, 5, 1, 0, 0, 0)
    rows = []
    for i in range(n):
        opened = base + timedelta(seconds=i * 7 + rng.randrange(5))
        # Two records share each update second, so ties need the sys_id order.
        updated = base + timedelta(days=1, seconds=i // 2)
        state = rng.choice(["1", "2", "3", "6", "7"])
        resolved = state in ("6", "7")
        closed = state == "7"
        a, b = rng.sample(WORDS, 2)
        rows.append(
            {
                "active": "false" if closed else "true",
                "assigned_to": rng.choice(users) if state != "1" else "",
                "assignment_group": rng.choice(groups),
                "caller_id": rng.choice(users),
                "closed_at": (opened + timedelta(hours=5)).strftime(DATE) if closed else "",
                "closed_by": rng.choice(users) if closed else "",
                "cmdb_ci": rng.choice(cis) if rng.random() < 0.8 else "",
                "company": rng.choice(companies),
                "description": f"User reports {a} {b} problem; ticket {i}. " * 3,
                "number": f"INC{i + 1:07d}",
                "opened_at": opened.strftime(DATE),
                "opened_by": rng.choice(users),
                "resolved_at": (opened + timedelta(hours=4)).strftime(DATE) if resolved else "",
                "resolved_by": rng.choice(users) if resolved else "",
                "short_description": f"{a.capitalize()} {b} issue",
                "state": state,
                "sys_class_name": TABLE,
                "sys_created_by": "admin",
                "sys_created_on": opened.strftime(DATE),
                "sys_id": sys_id("incident", i),
                "sys_mod_count": str(rng.randrange(10)),
                "sys_updated_by": rng.choice(["admin", "employee", "itil"]),
                "sys_updated_on": updated.strftime(DATE),
            }
        )
    rows.sort(key=lambda r: (r["sys_updated_on"], r["sys_id"]))
    return rows


def render(row: dict[str, str], fields: list[str], base_url: str, exclude_links: bool) -> dict:
    out = {}
    for name in fields:
        value = row[name]
        target = COLUMNS[name]
        if target and value and not exclude_links:
            out[name] = {"link": f"{base_url}/api/now/table/{target}/{value}", "value": value}
        else:
            out[name] = value
    return out


class State:
    def __init__(self, rows, user, password):
        self.rows = rows
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.cache: dict[str, list[str]] = {}  # base_url -> pre-rendered full records
        self.lock = threading.Lock()
        self.requests = 0
        self.table_requests = 0

    def rendered(self, base_url: str) -> list[str]:
        with self.lock:
            if base_url not in self.cache:
                fields = list(COLUMNS)
                self.cache[base_url] = [
                    json.dumps(render(r, fields, base_url, False), separators=(",", ":"))
                    for r in self.rows
                ]
            return self.cache[base_url]


def flag(params: dict[str, str], name: str) -> bool:
    return params.get(name, "").lower() == "true"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: State
    log = False

    def version_string(self) -> str:
        return "ServiceNow"

    def log_message(self, fmt, *args):  # noqa: D401 - stdlib hook
        if self.log:
            sys.stderr.write("fake_servicenow: " + (fmt % args) + "\n")

    def reply(self, status: int, body: bytes, headers: list[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def error(self, status: int, message: str, detail: str | None = None) -> None:
        body = {"error": {"message": message, "detail": detail}, "status": "failure"}
        self.reply(status, json.dumps(body).encode())

    def do_GET(self) -> None:  # noqa: N802 - stdlib hook
        url = urlsplit(self.path)
        if url.path == "/__stats":
            s = self.state
            body = {"requests": s.requests, "table_requests": s.table_requests}
            return self.reply(200, json.dumps(body).encode())
        with self.state.lock:
            self.state.requests += 1
        if self.headers.get("Authorization") != self.state.auth:
            return self.error(401, "User Not Authenticated", "Required to provide Auth information")
        parts = url.path.strip("/").split("/")
        if parts[:2] == ["api", "now"] and parts[2:3] in (["v1"], ["v2"]):
            parts = parts[:2] + parts[3:]
        if len(parts) != 4 or parts[:3] != ["api", "now", "table"]:
            return self.error(400, "Requested URI does not represent any resource")
        if parts[3] != TABLE:
            return self.error(400, f"Invalid table {parts[3]}")
        with self.state.lock:
            self.state.table_requests += 1
        self.table(url)

    def table(self, url) -> None:
        pairs = parse_qsl(url.query, keep_blank_values=True)
        params = dict(pairs)
        try:
            limit = int(params.get("sysparm_limit", DEFAULT_LIMIT))
            limit = limit if limit > 0 else DEFAULT_LIMIT
        except ValueError:
            limit = DEFAULT_LIMIT
        try:
            offset = max(0, int(params.get("sysparm_offset", 0)))
        except ValueError:
            offset = 0
        base_url = f"http://{self.headers.get('Host', '127.0.0.1')}"
        exclude = flag(params, "sysparm_exclude_reference_link")
        asked = [f.strip() for f in params.get("sysparm_fields", "").split(",") if f.strip()]
        fields = [f for f in dict.fromkeys(asked) if f in COLUMNS] if asked else None
        rows = self.state.rows
        total = len(rows)
        window = range(offset, min(offset + limit, total))
        if fields is None and not exclude:
            cached = self.state.rendered(base_url)
            body = '{"result":[' + ",".join(cached[i] for i in window) + "]}"
        else:
            fields = fields if fields is not None else list(COLUMNS)
            result = [render(rows[i], fields, base_url, exclude) for i in window]
            body = json.dumps({"result": result}, separators=(",", ":"))
        headers = []
        if not flag(params, "sysparm_no_count"):
            headers.append(("X-Total-Count", str(total)))
        link = link_header(base_url, url.path, pairs, limit, offset, total)
        if link:
            headers.append(("Link", link))
        self.reply(200, body.encode(), headers)


def link_header(base_url, path, pairs, limit, offset, total) -> str | None:
    if total == 0 or (offset == 0 and total <= limit):
        return None
    others = [(k, v) for k, v in pairs if k not in ("sysparm_limit", "sysparm_offset")]

    def url(o: int) -> str:
        q = urlencode(others + [("sysparm_limit", str(limit)), ("sysparm_offset", str(o))])
        return f"{base_url}{path}?{q}"

    links = [f'<{url(0)}>;rel="first"', f'<{url(offset - limit)}>;rel="prev"']
    if offset + limit < total:
        links.append(f'<{url(offset + limit)}>;rel="next"')
    links.append(f'<{url(((total - 1) // limit) * limit)}>;rel="last"')
    return ",".join(links)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=5000, help="number of incidents (5000)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    ap.add_argument("--user", default="admin")
    ap.add_argument("--password", default="admin")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--log", action="store_true", help="log each request to stderr")
    args = ap.parse_args()

    state = State(generate(args.records, args.seed), args.user, args.password)
    Handler.state = state
    Handler.log = args.log
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    host, port = server.server_address[:2]
    # Render the full records once up front so the first page is not slower than the rest.
    state.rendered(f"http://{host}:{port}")

    def stop(signum, _frame):
        sys.stderr.write(
            f"fake_servicenow: {state.requests} requests ({state.table_requests} to the table)\n"
        )
        sys.stderr.flush()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"listening http://{host}:{port}", flush=True)
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
