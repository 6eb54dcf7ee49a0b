"""The configurations the load benchmark compares: the `http_filters` list of the Envoy under test.

Native jwt_authn and Portcullis do the same job: verify an RS256 token from
`Authorization: Bearer`, require the issuer, the audience and `exp`, copy `sub` into
`x-jwt-sub`, keep the token on the request, and answer an invalid or missing token with 401.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ISSUER = "https://issuer.bench.test"
AUDIENCE = "bench-api"
CLAIM_HEADER = "x-jwt-sub"
# Portcullis's default `cache_size`; the native cached row gets the same capacity so that the
# 10 000-token workload compares like with like (jwt_authn's own default is only 100).
CACHE_ENTRIES = 10_000

ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}


@dataclass(frozen=True)
class Configuration:
    name: str
    description: str
    filters: list[dict[str, Any]]
    checks_tokens: bool  # False for the no-filter floor: its status mix is not checked
    optional: bool = False  # a plugin that rejects this config makes a "config rejected" row


def native_jwt_authn(jwks: dict[str, Any], cached: bool) -> dict[str, Any]:
    provider: dict[str, Any] = {
        "issuer": ISSUER,
        "audiences": [AUDIENCE],
        "local_jwks": {"inline_string": json.dumps(jwks)},
        "from_headers": [{"name": "Authorization", "value_prefix": "Bearer "}],
        "forward": True,  # Portcullis forwards the token by default (forward_token: true)
        "require_expiration": True,  # Portcullis's default; jwt_authn's is false
        "claim_to_headers": [{"header_name": CLAIM_HEADER, "claim_name": "sub"}],
    }
    if cached:
        # Without jwt_cache_config jwt_authn verifies every token; with it, valid tokens are
        # kept (per worker thread, LRU) and skip signature verification until they expire.
        provider["jwt_cache_config"] = {"jwt_cache_size": CACHE_ENTRIES}
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"bench": provider},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}],
        },
    }


def portcullis_policy(jwks: dict[str, Any], **top_level: Any) -> dict[str, Any]:
    """Default settings apart from what the job needs; `top_level` adds fields (e.g. crypto)."""
    return {
        "providers": {"bench": {"issuer": ISSUER, "audiences": [AUDIENCE], "jwks": jwks}},
        "rules": [{"name": "api", "match": {"path": {"prefix": "/"}}}],
        "claim_headers": [{"claim": "sub", "header": CLAIM_HEADER}],
        **top_level,
    }


def portcullis_filter(wasm: Path, policy: dict[str, Any]) -> dict[str, Any]:
    """The same wasm filter settings as examples/envoy/envoy.yaml."""
    return wasm_filter(wasm, json.dumps(policy))


def wasm_filter(wasm: Path, configuration: str) -> dict[str, Any]:
    """An envoy.filters.http.wasm filter running `wasm` in V8 with `configuration`."""
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "portcullis",
                "root_id": "portcullis",
                "vm_config": {
                    "vm_id": "portcullis",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": str(wasm.resolve())}},
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": configuration,
                },
                "failure_policy": "FAIL_RELOAD",
            },
        },
    }


def all_configurations(jwks: dict[str, Any], wasm: Path, floor_wasm: Path) -> list[Configuration]:
    return [
        Configuration("no-filter", "router only: the floor", [ROUTER], checks_tokens=False),
        Configuration(
            "wasm-floor",
            "a proxy-wasm plugin that reads one header and bumps a counter: what any wasm filter costs",
            [wasm_filter(floor_wasm, ""), ROUTER],
            checks_tokens=False,
        ),
        Configuration("native", "jwt_authn, no jwt_cache_config", [native_jwt_authn(jwks, False), ROUTER], True),
        Configuration(
            "native-cached",
            f"jwt_authn, jwt_cache_config.jwt_cache_size {CACHE_ENTRIES}",
            [native_jwt_authn(jwks, True), ROUTER],
            True,
        ),
        Configuration(
            "portcullis",
            "Portcullis, default settings",
            [portcullis_filter(wasm, portcullis_policy(jwks)), ROUTER],
            True,
        ),
        Configuration(
            "portcullis-uncached",
            'Portcullis, "cache_size": 0: every request verifies its token (against native)',
            [portcullis_filter(wasm, portcullis_policy(jwks, cache_size=0)), ROUTER],
            True,
        ),
        Configuration(
            "portcullis-wasm-crypto",
            'Portcullis, "crypto": "wasm" (pure-Rust signatures)',
            [portcullis_filter(wasm, portcullis_policy(jwks, crypto="wasm")), ROUTER],
            True,
            optional=True,
        ),
        Configuration(
            "portcullis-wasm-uncached",
            'Portcullis, "crypto": "wasm" and "cache_size": 0: every request verifies in the VM',
            [portcullis_filter(wasm, portcullis_policy(jwks, cache_size=0, crypto="wasm")), ROUTER],
            True,
            optional=True,
        ),
    ]


def render_filters(filters: list[dict[str, Any]]) -> str:
    """JSON is YAML: the list goes in place of ${PLUGIN_CONFIG} in bench/envoy/proxy.yaml."""
    return json.dumps(filters, indent=2)
