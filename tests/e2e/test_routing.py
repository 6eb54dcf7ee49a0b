"""Identity routing in a real proxy: examples/envoy/routing (its template and policy, with this
session's keys) in Envoy, and the same policy behind HAProxy with one backend per route tag.

Three echo upstreams say who answered: the admin pool, the replica pool, and the untagged one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

import echo_upstream
from e2e_support import AUDIENCE, ISSUER, Answer, Keys, call, decision_lines

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "envoy" / "routing"
ROLES = "https://aws.amazon.com/roles"
ADMIN = "arn:aws:iam::123456789012:role/AdminOps"
READER = "arn:aws:iam::123456789012:role/ReadOnlyBI"


@pytest.fixture(scope="module")
def pools() -> Iterator[dict[str, int]]:
    servers = {name: echo_upstream.serve(name=name) for name in ("admin-pool", "replica-pool")}
    yield {name: s.server_address[1] for name, s in servers.items()}
    for s in servers.values():
        s.shutdown()
        s.server_close()


@pytest.fixture(scope="module")
def proxy(start_envoy: Any, keys: Keys, pools: dict[str, int]) -> Any:
    policy = json.loads((EXAMPLE / "policy.json").read_text())
    provider = policy["providers"].pop("demo")
    provider.pop("remote_jwks")
    provider.update(issuer=ISSUER, audiences=[AUDIENCE], jwks=keys.trusted.jwks())
    policy["providers"]["e2e"] = provider
    admin, replica = pools["admin-pool"], pools["replica-pool"]
    if start_envoy.kind == "envoy":
        return start_envoy(policy, template=EXAMPLE / "envoy.yaml",
                           placeholders={"ADMIN_POOL_PORT": str(admin), "REPLICA_POOL_PORT": str(replica)})
    return start_envoy(policy, config_args=("--route", f"admin=127.0.0.1:{admin}",
                                            "--route", f"replica=127.0.0.1:{replica}",
                                            "--untagged", "upstream"))


def pool(answer: Answer) -> str:
    assert answer.status == 200 and answer.upstream is not None, answer
    return answer.upstream.get("upstream") or "untagged"


def test_each_role_reaches_its_pool_with_its_tag(proxy: Any, keys: Keys) -> None:
    admin = call(proxy, "/db/orders", keys.token("ops", **{ROLES: [ADMIN]}))
    assert pool(admin) == "admin-pool"
    assert admin.seen("x-portcullis-route") == ["admin"]
    assert admin.seen("x-jwt-sub") == ["ops"]
    reader = call(proxy, "/db/orders", keys.token("bi", **{ROLES: [READER]}))
    assert pool(reader) == "replica-pool"
    assert reader.seen("x-portcullis-route") == ["replica"]
    line = next(l for l in reversed(decision_lines(proxy)) if 'sub="bi"' in l)
    assert 'route="replica"' in line, line


def test_a_spoofed_tag_from_the_client_is_ignored(proxy: Any, keys: Keys) -> None:
    spoof = {"x-portcullis-route": "admin"}
    # Public: the route Envoy first chose on the spoofed header must not stand.
    health = call(proxy, "/healthz", headers=spoof)
    assert pool(health) == "untagged"
    assert health.seen("x-portcullis-route") == []
    reader = call(proxy, "/db/orders", keys.token("bi", **{ROLES: [READER]}), headers=spoof)
    assert pool(reader) == "replica-pool"
    assert reader.seen("x-portcullis-route") == ["replica"]
    nobody = call(proxy, "/profile", keys.token("carol"), headers={"X_Portcullis_Route": "admin", **spoof})
    assert pool(nobody) == "untagged"
    assert nobody.seen("x-portcullis-route") == [] and nobody.seen("x_portcullis_route") == []


def test_an_unmatched_identity_is_refused_or_untagged_per_rule(proxy: Any, keys: Keys) -> None:
    lookalike = keys.token("eve", **{ROLES: ["arn:aws:iam::123456789012:role/NotAdmin"]})
    refused = call(proxy, "/db/orders", lookalike)
    assert refused.status == 403, refused
    assert refused.json["error"] == "access_denied", refused
    assert refused.upstream is None
    line = next(l for l in reversed(decision_lines(proxy)) if 'sub="eve"' in l)
    assert "reason=no_route" in line and "route=-" in line, line
    assert pool(call(proxy, "/profile", lookalike)) == "untagged"
    assert call(proxy, "/db/orders").status == 401


def test_a_new_token_with_another_role_moves_on_the_same_connection(proxy: Any, keys: Keys) -> None:
    with requests.Session() as session:
        def get(token: str) -> Answer:
            return Answer(session.get(proxy.url("/db/orders"), timeout=15,
                                      headers={"Authorization": f"Bearer {token}"}))
        assert pool(get(keys.token("dana", **{ROLES: [READER]}))) == "replica-pool"
        # The IdP now gives dana an admin role: her next request, same connection, moves.
        assert pool(get(keys.token("dana", jti="2", **{ROLES: [READER, ADMIN]}))) == "admin-pool"
        assert pool(get(keys.token("dana", jti="3", **{ROLES: [READER]}))) == "replica-pool"
