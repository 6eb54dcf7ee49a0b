"""Helpers shared by the e2e tests: keys and tokens, the base plugin config, HTTP calls."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "scripts"), str(REPO / "examples" / "envoy")]

import mint  # noqa: E402
from envoy_runner import EnvoyProcess  # noqa: E402

ISSUER = "https://issuer.e2e.test"
AUDIENCE = "e2e-api"


# --- keys and tokens -----------------------------------------------------------------------
class Keys:
    """The trusted signer (its JWKS goes into the plugin config) and an untrusted one."""

    def __init__(self) -> None:
        self.trusted = mint.Signer.generate("e2e-k1")
        # Same kid, different key: a token it signs must fail signature verification.
        self.attacker = mint.Signer.generate("e2e-k1")

    def claims(self, sub: str = "alice", **kw: Any) -> dict[str, Any]:
        kw.setdefault("iss", ISSUER)
        kw.setdefault("aud", AUDIENCE)
        return mint.claims(sub=sub, **kw)

    def token(self, sub: str = "alice", signer: mint.Signer | None = None, **kw: Any) -> str:
        return (signer or self.trusted).token(self.claims(sub, **kw))


# --- the plugin config used by most tests ----------------------------------------------------
def base_config(keys: Keys, **overrides: Any) -> dict[str, Any]:
    """The contract's example config, with this session's JWKS. Top-level keys in `overrides`
    replace the defaults; `provider={...}` is merged into the `e2e` provider."""
    provider_overrides = overrides.pop("provider", {})
    config: dict[str, Any] = {
        "mode": "enforce",
        "realm": "portcullis",
        "providers": {
            "e2e": {
                "issuer": ISSUER,
                "audiences": [AUDIENCE],
                "jwks": keys.trusted.jwks(),
                "algorithms": ["RS256"],
                "clock_skew_seconds": 30,
                "require_expiration": True,
                "max_lifetime_seconds": 86400,
                "max_token_bytes": 8192,
            }
        },
        "rules": [
            {"name": "health", "match": {"path": {"exact": "/healthz"}}, "auth": "none"},
            {"name": "read", "match": {"path": {"prefix": "/api/"}, "methods": ["GET"]},
             "providers": ["e2e"], "scopes": {"all_of": ["read"]}},
            {"name": "admin", "match": {"path": {"regex": "^/admin(/|$)"}},
             "claims": [{"claim": "realm_access.roles", "any_of": ["admin"]},
                        {"claim": "email", "glob": "*@example.com"}]},
            {"name": "maybe", "match": {"path": {"prefix": "/public/"}}, "auth": "optional"},
        ],
        "claim_headers": [
            {"claim": "sub", "header": "x-jwt-sub"},
            {"claim": "scope", "header": "x-jwt-scope"},
            {"claim": "realm_access.roles", "header": "x-jwt-roles"},
        ],
        "forward_token": True,
    }
    config["providers"]["e2e"].update(provider_overrides)
    config.update(overrides)
    return copy.deepcopy(config)


# --- HTTP helpers ----------------------------------------------------------------------------
class Answer:
    """A response from Envoy, plus what the echo upstream saw (when it got the request)."""

    def __init__(self, resp: requests.Response) -> None:
        self.status = resp.status_code
        self.headers = resp.headers
        self.text = resp.text
        self.upstream: dict[str, Any] | None = None
        try:
            body = resp.json()
        except ValueError:
            body = None
        self.json = body
        if isinstance(body, dict) and "raw_headers" in body:
            self.upstream = body

    def seen(self, name: str) -> list[str]:
        """Every value of request header `name` that reached the upstream."""
        assert self.upstream is not None, f"request did not reach the upstream: {self.status} {self.text!r}"
        return [v for n, v in self.upstream["raw_headers"] if n == name.lower()]

    @property
    def www_authenticate(self) -> str:
        return self.headers.get("www-authenticate", "")

    def __repr__(self) -> str:
        return f"<{self.status} www-authenticate={self.www_authenticate!r} body={self.text[:300]!r}>"


def call(envoy: EnvoyProcess, path: str, token: str | None = None, method: str = "GET",
         headers: dict[str, str] | None = None, cookies: dict[str, str] | None = None,
         fresh_connection: bool = True) -> Answer:
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    if fresh_connection:
        all_headers.setdefault("Connection", "close")
    resp = requests.request(method, envoy.url(path), headers=all_headers, cookies=cookies, timeout=15,
                            allow_redirects=False)
    return Answer(resp)


def decision_lines(envoy: EnvoyProcess) -> list[str]:
    return [line for line in envoy.log_text().splitlines() if "portcullis decision" in line]


def plugin_log_lines(envoy: EnvoyProcess) -> list[str]:
    """Lines the plugin itself logged (Envoy prefixes them with `wasm log <plugin> <root id>`)."""
    return [line for line in envoy.log_text().splitlines() if "wasm log" in line]


def worker_thread(line: str) -> str:
    """The thread id in Envoy's default log format: [time][thread][level][component] ..."""
    parts = line.split("][")
    return parts[1] if len(parts) > 1 else ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def hs256_with_public_key(keys: Keys, claims: dict[str, Any]) -> str:
    """The classic algorithm-confusion forgery: HS256 keyed with the RSA public key's PEM."""
    header = {"alg": "HS256", "typ": "JWT", "kid": keys.trusted.kid}
    signing_input = f"{mint.b64url(json.dumps(header).encode())}.{mint.b64url(json.dumps(claims).encode())}"
    mac = hmac.new(keys.trusted.public_pem(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{mint.b64url(mac)}"


def host_harness() -> list[str]:
    """The command that runs the harness CLI: the binary scripts/test built with the rest of
    the workspace (PORTCULLIS_HOST_HARNESS), or `cargo run` when run by hand, which builds it
    the first time (a long build: wasmtime)."""
    built = os.environ.get("PORTCULLIS_HOST_HARNESS")
    if built and os.access(built, os.X_OK):
        return [built]
    return ["cargo", "run", "-q", "-p", "proxy-wasm-harness", "--bin", "host-harness", "--"]
