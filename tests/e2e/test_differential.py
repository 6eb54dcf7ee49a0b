"""The same requests through the harness (host-harness CLI) and through a real Envoy, with the
same plugin and configuration, must get the same status and the same identity headers upstream.
Where they differ, the harness is wrong."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from e2e_support import REPO, Keys, base_config, call, host_harness

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
def test_harness_and_envoy_agree(start_envoy, wasm, keys, tmp_path):
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
            differences.append(f"{r.get('method', 'GET')} {r['path']}: envoy {e.status} {e_seen} "
                               f"vs harness {h['status']} {h_seen}")
    assert not differences, "\n".join(differences)
    statuses = {h["status"] for h in harness}
    assert {200, 401, 403} <= statuses, statuses
