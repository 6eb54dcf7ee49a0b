"""The same requests through the harness (host-harness CLI), through a real Envoy and through HAProxy
with portcullis-spoa (test_harness_and_proxy_agree runs once per proxy), with the
same plugin and configuration, must get the same status and the same identity headers upstream;
and the proxy-wasm SDK's own examples (../shared/peer-modules/rust) must behave the same in both,
field by field. Where they differ, the harness is wrong."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from e2e_support import REPO, Answer, EnvoyProcess, Keys, base_config, call, host_harness, plugin_log_lines

IDENTITY_HEADERS = ("x-jwt-sub", "x-jwt-scope", "x-jwt-roles")


def cases(keys: Keys) -> list[dict[str, Any]]:
    now = int(time.time())
    reader = keys.token(scope="read")
    admin = keys.token("root", scope="read", email="root@example.com", realm_access={"roles": ["admin"]})
    return [
        {"path": "/healthz"},
        {"path": "/healthz", "headers": {"x-jwt-sub": "mallory"}},
        {"path": "/api/items"},
        {"path": "/api/items", "token": reader},
        {"path": "/api/items", "token": reader, "headers": {"x-jwt-sub": "mallory"}},
        {"path": "/api/items", "method": "POST", "token": reader},
        {"path": "/api/items", "token": keys.token(scope="write")},
        {"path": "/api/items", "token": keys.token(scope="read", exp=now - 3600, iat=now - 7200)},
        {"path": "/api/items", "token": keys.token(scope="read", signer=keys.attacker)},
        {"path": "/api/items", "token": keys.token(scope="read", iss="https://elsewhere.test")},
        {"path": "/api/items", "token": "not-a-jwt"},
        {"path": "/admin/users", "token": admin},
        {"path": "/admin/users", "token": reader},
        {"path": "/public/page"},
        {"path": "/public/page", "token": reader},
        {"path": "/nowhere", "token": reader},
    ]


def through_harness(wasm: Path, config: dict[str, Any], reqs: list[dict[str, Any]], tmp: Path) -> list[dict]:
    cfg = tmp / "policy.json"
    cfg.write_text(json.dumps(config))
    lines = []
    for r in reqs:
        headers = {":authority": "localhost", **r.get("headers", {})}
        if "token" in r:
            headers["authorization"] = f"Bearer {r['token']}"
        lines.append(json.dumps({"method": r.get("method", "GET"), "path": r["path"], "headers": headers}))
    requests_file = tmp / "requests.jsonl"
    requests_file.write_text("\n".join(lines) + "\n")
    out = subprocess.run(
        [*host_harness(), "run", "--json",
         "--plugin", str(wasm), "--config", str(cfg), "--requests", str(requests_file)],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert out.returncode in (0, 1), out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


@pytest.mark.timeout(900)  # by hand, `cargo run` may have to build the harness first
def test_harness_and_proxy_agree(start_envoy, wasm, keys, tmp_path):
    config = base_config(keys)
    reqs = cases(keys)
    harness = through_harness(wasm, config, reqs, tmp_path)
    assert len(harness) == len(reqs)
    envoy = start_envoy(config)
    differences = []
    for r, h in zip(reqs, harness):
        assert "error" not in h, h
        e = call(envoy, r["path"], r.get("token"), method=r.get("method", "GET"), headers=r.get("headers"))
        e_seen = {n: e.seen(n) for n in IDENTITY_HEADERS} if e.upstream is not None else None
        h_seen = ({n: [v for k, v in h["upstream_headers"] if k == n] for n in IDENTITY_HEADERS}
                  if h["forwarded"] else None)
        if e.status != h["status"] or e_seen != h_seen:
            differences.append(f"{r.get('method', 'GET')} {r['path']}: {envoy.kind} {e.status} {e_seen} "
                               f"vs harness {h['status']} {h_seen}")
    assert not differences, "\n".join(differences)
    statuses = {h["status"] for h in harness}
    assert {200, 401, 403} <= statuses, statuses


# --- Peer modules (the Rust SDK examples in ../shared/peer-modules/rust) -------------------------------
# The same module, configuration and requests in a real Envoy and in the harness CLI; compared field by
# field: status, whether the origin got the request, the local reply's body and headers, the headers the
# plugin added to a forwarded response, the request headers the origin saw, the callouts made, the plugin's
# log lines. Known differences are named below, never skipped silently.

PEERS = REPO.parent / "shared" / "peer-modules" / "rust"
PEER_TEMPLATE = Path(__file__).with_name("peer_envoy.yaml")
# Added by Envoy's router to the upstream request, after every filter: the harness has no router.
# `transfer-encoding` is the HTTP/1 codec's framing of a body whose content-length the plugin removed.
ROUTER_ONLY = {"x-envoy-expected-rq-timeout-ms", "transfer-encoding"}
# Values that differ by nature (generated per request, or the time).
VOLATILE = {"x-request-id", "date", "x-envoy-upstream-service-time"}
# Sent by the client library and by Envoy's HTTP/1 codec as hop-by-hop; not compared.
CLIENT_HEADERS = {"user-agent": "e2e", "accept": "*/*", "accept-encoding": "identity"}


# What the httpbin stand-in answers with (besides content-length), in Envoy and in the harness alike.
HTTPBIN_HEADERS = {"server": "httpbin-e2e", "date": "Thu, 01 Jan 1970 00:00:00 GMT",
                   "content-type": "application/octet-stream"}


class Httpbin:
    """The `httpbin` cluster: answers `GET /bytes/1` with one byte the test chooses, and records paths."""

    def __init__(self) -> None:
        self.byte = 2
        self.seen: list[tuple[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def version_string(self) -> str:
                return HTTPBIN_HEADERS["server"]

            def date_time_string(self, timestamp: float | None = None) -> str:
                return HTTPBIN_HEADERS["date"]

            def do_GET(self) -> None:  # noqa: N802 (stdlib name)
                # The Go example forwards the client's headers, content-length included, without the body:
                # read nothing, and close the connection after answering.
                self.close_connection = True
                outer.seen.append((self.command, self.path))
                body = bytes([outer.byte])
                self.send_response(200)
                self.send_header("content-type", HTTPBIN_HEADERS["content-type"])
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_PUT = do_GET  # the Go example forwards the client's method and path

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_address[1]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# (module, plugin configuration, httpbin's byte, [requests]); a request: method, path, headers, body.
PEER_CASES: list[tuple[str, str, int, list[dict[str, Any]]]] = [
    ("http_headers", "", 2, [{"path": "/hello"}, {"path": "/other", "headers": {"x-case": "1"}}]),
    ("http_config", "from-config", 2, [{"path": "/"}]),
    ("http_auth_random", "", 2, [{"path": "/get"}, {"method": "POST", "path": "/post", "body": "payload"}]),
    ("http_auth_random", "", 3, [{"path": "/get"}, {"method": "POST", "path": "/post", "body": "payload"}]),
    ("grpc_auth_random", "", 2, [{"path": "/"}]),
    ("envoy_filter_metadata", "", 2, [{"path": "/"}]),
    ("go/http_auth_random", "", 2, [{"method": "POST", "path": "/post", "body": "payload"}]),
    ("go/http_auth_random", "", 3, [{"method": "POST", "path": "/post", "body": "payload"}]),
    ("go/http_headers", '{"header": "x-wasm-header", "value": "demo-wasm"}', 2, [{"path": "/"}]),
    ("go/http_routing", "2", 2, [{"path": "/"}]),
    ("go/http_routing", "1", 2, [{"path": "/"}]),
    ("go/http_body", "", 2, [{"method": "POST", "path": "/", "body": "hello"},
                             {"method": "POST", "path": "/", "body": "hello",
                              "headers": {"buffer-operation": "append"}},
                             {"path": "/"}]),
    ("go/http_body", "echo", 2, [{"method": "POST", "path": "/", "body": "echo me"}]),
    ("go/postpone_requests", "", 2, [{"path": "/"}]),
    ("go/shared_data", "", 2, [{"path": "/"}, {"path": "/"}]),
    ("go/metrics", "", 2, [{"path": "/", "headers": {"my-custom-header": "foo"}},
                           {"path": "/", "headers": {"my-custom-header": "foo"}},
                           {"path": "/", "headers": {"my-custom-header": "bar"}}]),
]


def _envoy_metrics(envoy: Any) -> dict[str, int]:
    """The plugin's own metrics in Envoy (admin /stats; Envoy files them under `wasmcustom.`)."""
    status, body = _admin_get(envoy.admin_url("/stats?format=json&filter=^wasmcustom\\."))
    assert status == 200, body
    return {st["name"].removeprefix("wasmcustom."): st["value"]
            for st in json.loads(body).get("stats", []) if "value" in st}


def _admin_get(url: str) -> tuple[int, str]:
    resp = requests.get(url, timeout=5)
    return resp.status_code, resp.text


def _envoy_record(envoy: Any, r: dict[str, Any], log_start: int) -> dict[str, Any]:
    headers = {**CLIENT_HEADERS, **r.get("headers", {})}
    resp = requests.request(r.get("method", "GET"), envoy.url(r["path"]), headers=headers,
                            data=r.get("body"), timeout=15)
    answer = Answer(resp)
    logs = [line.split(": ", 1)[1] if ": " in line else line
            for line in plugin_log_lines(envoy)[log_start:]]
    upstream = None
    if answer.upstream is not None:
        upstream = [(k, v) for k, v in answer.upstream["raw_headers"]]
    return {"status": resp.status_code, "forwarded": upstream is not None,
            "upstream_body_bytes": answer.upstream["body_bytes"] if answer.upstream else None,
            "headers": [(k.lower(), v) for k, v in resp.raw.headers.items()],
            "body": resp.text, "upstream_headers": upstream, "logs": logs}


def _harness_records(module: Path, config: str, byte: int, reqs: list[dict[str, Any]], authority: str,
                     tmp: Path) -> list[dict[str, Any]]:
    cfg = tmp / "config.txt"
    cfg.write_text(config)
    ups = tmp / "upstreams.json"
    ups.write_text(json.dumps({"httpbin": {"status": 200, "body": chr(byte),
                                           "headers": {**HTTPBIN_HEADERS, "content-length": "1"}}}))
    lines = []
    for r in reqs:
        line: dict[str, Any] = {"method": r.get("method", "GET"), "path": r["path"], "scheme": "http",
                                "authority": authority,
                                "headers": {**CLIENT_HEADERS, **r.get("headers", {})}}
        if "body" in r:
            line["body"] = r["body"]
            line["headers"]["content-length"] = str(len(r["body"]))
        lines.append(json.dumps(line))
    reqfile = tmp / "requests.jsonl"
    reqfile.write_text("\n".join(lines) + "\n")
    args = [*host_harness(), "run", "--json", "--plugin", str(module), "--upstreams", str(ups),
            "--requests", str(reqfile)]
    if config:
        args += ["--config", str(cfg)]
    out = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert out.returncode in (0, 1), out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


# Headers of the origin's own response: the origins differ (the echo upstream, the CLI's empty 200).
ORIGIN_HEADERS = {"content-type", "content-length", "date", "server", "connection", "transfer-encoding"}


def _norm_logs(lines: list[str], forwarded: bool) -> list[str]:
    """Log lines with context ids and volatile values masked; for a forwarded request without the lines
    that log the origin's own response headers (the http_headers example logs every header)."""
    out = []
    for line in lines:
        # Envoy's log file ends a message at its first newline; the harness keeps the message whole.
        line = re.sub(r"#\d+", "#N", line.rstrip("\n"))
        logged = re.search(r"<-+ ([^:]+):", line)  # "#2 <- name: value" (Rust), "<-- name: value" (Go)
        if forwarded and logged and logged.group(1) in ORIGIN_HEADERS:
            continue
        for volatile in VOLATILE:
            line = re.sub(rf"\b{volatile}: .*$", volatile, line)
        out.append(line)
    return sorted(out)


def _plugin_response_headers(headers: list[tuple[str, str]] | list[list[str]]) -> dict[str, str]:
    """Response headers minus the origin's own (the origins differ: the echo upstream and the CLI's)."""
    origin = {"content-type", "content-length", "connection", "transfer-encoding"}
    return {k: ("*" if k in VOLATILE else v) for k, v in headers if k not in origin}


def _local_reply_headers(headers: list[tuple[str, str]] | list[list[str]]) -> dict[str, str]:
    """A local reply's headers: all of them (Envoy's content-length and content-type included)."""
    return {k: ("*" if k in VOLATILE else v) for k, v in headers if k != "connection"}


@pytest.mark.timeout(900)
def test_peer_modules_behave_in_the_harness_as_in_envoy(upstream, tmp_path):
    httpbin = Httpbin()
    differences: list[str] = []
    try:
        for n, (name, config, byte, reqs) in enumerate(PEER_CASES):
            module = PEERS / f"{name}.wasm" if "/" not in name else PEERS.parent / f"{name}.wasm"
            assert module.is_file(), module
            work = tmp_path / f"{n}-{name.replace('/', '-')}"
            work.mkdir()
            envoy = EnvoyProcess(module, config, upstream, work / "envoy", idp_port=httpbin.port,
                                 template=PEER_TEMPLATE)
            envoy.start(timeout=120)
            try:
                httpbin.byte = byte
                httpbin.seen.clear()
                e_recs = []
                for r in reqs:
                    e_recs.append(_envoy_record(envoy, r, len(plugin_log_lines(envoy))))
                    e_recs[-1]["callouts"] = list(httpbin.seen)
                    httpbin.seen.clear()
                authority = f"127.0.0.1:{envoy.listen_port}"
                e_metrics = _envoy_metrics(envoy)
            finally:
                envoy.stop()
            h_recs = _harness_records(module, config, byte, reqs, authority, work)
            assert len(h_recs) == len(reqs), h_recs
            for r, e, h in zip(reqs, e_recs, h_recs):
                label = f"{name} (byte {byte}) {r.get('method', 'GET')} {r['path']}"
                assert "error" not in h, (label, h)
                got = {
                    "status": (e["status"], h["status"]),
                    "forwarded": (e["forwarded"], h["forwarded"]),
                    "callouts": (e["callouts"], [(c["method"], c["path"]) for c in h["callouts"]]),
                    "logs": (_norm_logs(e["logs"], e["forwarded"]), _norm_logs(h["logs"], h["forwarded"])),
                }
                if e["forwarded"] != h["forwarded"]:
                    got["outcome"] = (e["status"], h.get("verdict"))
                elif not e["forwarded"]:
                    got["body"] = (e["body"], h.get("body"))
                    got["response headers"] = (_local_reply_headers(e["headers"]),
                                               _local_reply_headers(h.get("headers", [])))
                else:
                    got["response headers"] = (_plugin_response_headers(e["headers"]),
                                               _plugin_response_headers(h["response"]["headers"]))
                    e_up = {k for k, _ in e["upstream_headers"]} - ROUTER_ONLY - {"host"}
                    h_up = {k for k, _ in h["upstream_headers"] if not k.startswith(":")}
                    got["upstream header names"] = (sorted(e_up), sorted(h_up))
                    got["upstream authority"] = (dict(e["upstream_headers"]).get("host"),
                                                 dict(h["upstream_headers"]).get(":authority"))
                    got["upstream body size"] = (e["upstream_body_bytes"], len(h["upstream_body"]))
                for field, (ev, hv) in got.items():
                    if ev != hv:
                        differences.append(f"{label}: {field}: envoy {ev!r} vs harness {hv!r}")
            h_metrics = h_recs[-1]["metrics"] if h_recs else {}
            if e_metrics != h_metrics:
                differences.append(f"{name}: metrics: envoy {e_metrics!r} vs harness {h_metrics!r}")
    finally:
        httpbin.close()
    assert not differences, "\n".join(differences)
