"""Enforce mode in a real Envoy with two workers (two plugin VMs): the contract's answers."""

from __future__ import annotations

import json
import re
import time

import pytest

import mint
from e2e_support import (
    Keys,
    base_config,
    call,
    decision_lines,
    hs256_with_public_key,
    worker_thread,
)
from envoy_runner import EnvoyProcess

REALM = 'Bearer realm="portcullis"'


@pytest.fixture(scope="module")
def envoy(start_envoy, keys: Keys) -> EnvoyProcess:
    config = base_config(keys)
    config["rules"].insert(0, {"name": "local-only", "match": {"path": {"prefix": "/local/"},
                                                                "hosts": ["localhost"]}, "auth": "none"})
    return start_envoy(config, concurrency=2)


def assert_denied(answer, status: int, error: str | None) -> None:
    assert answer.status == status, answer
    assert answer.upstream is None, "a denied request must not reach the upstream"
    assert answer.www_authenticate.startswith(REALM), answer
    if error is None:
        assert "error=" not in answer.www_authenticate, answer
    else:
        assert f'error="{error}"' in answer.www_authenticate, answer
        assert isinstance(answer.json, dict) and answer.json.get("error") == error, answer


# --- allowed ---------------------------------------------------------------------------------
def test_valid_token_reaches_upstream_with_claim_headers(envoy, keys):
    token = keys.token("alice", scope="read write")
    answer = call(envoy, "/api/items", token)
    assert answer.status == 200, answer
    assert answer.seen("x-jwt-sub") == ["alice"]
    assert answer.seen("x-jwt-scope") == ["read write"]
    assert answer.seen("authorization") == [f"Bearer {token}"], "forward_token: true keeps the token"


def test_scp_array_counts_as_scopes(envoy, keys):
    answer = call(envoy, "/api/items", keys.token("carol", scp=["read", "other"]))
    assert answer.status == 200, answer
    assert answer.seen("x-jwt-sub") == ["carol"]


def test_spoofed_claim_headers_are_replaced_or_removed(envoy, keys):
    token = keys.token("alice", scope="read")  # no realm_access.roles claim
    answer = call(envoy, "/api/items", token,
                  headers={"x-jwt-sub": "mallory", "x-jwt-roles": "admin", "X-JWT-Scope": "everything"})
    assert answer.status == 200, answer
    assert answer.seen("x-jwt-sub") == ["alice"]
    assert answer.seen("x-jwt-scope") == ["read"]
    assert answer.seen("x-jwt-roles") == [], "a claim header whose claim is absent must not pass through"


def test_anonymous_route_removes_spoofed_claim_headers(envoy):
    answer = call(envoy, "/healthz", headers={"x-jwt-sub": "mallory", "x-jwt-roles": "admin"})
    assert answer.status == 200, answer
    assert answer.seen("x-jwt-sub") == []
    assert answer.seen("x-jwt-roles") == []


def test_admin_rule_claim_conditions(envoy, keys):
    admin = keys.token("bob", email="bob@example.com", realm_access={"roles": ["viewer", "admin"]})
    answer = call(envoy, "/admin/users", admin)
    assert answer.status == 200, answer
    assert answer.seen("x-jwt-sub") == ["bob"]
    roles = answer.seen("x-jwt-roles")
    assert len(roles) == 1 and "admin" in roles[0], roles

    wrong_email = keys.token("bob", email="bob@evil.test", realm_access={"roles": ["admin"]})
    assert_denied(call(envoy, "/admin", wrong_email), 403, "insufficient_scope")
    no_role = keys.token("alice", email="alice@example.com", scope="read")
    assert_denied(call(envoy, "/admin/users", no_role), 403, "insufficient_scope")


def test_optional_route(envoy, keys):
    anonymous = call(envoy, "/public/page", headers={"x-jwt-sub": "mallory"})
    assert anonymous.status == 200, anonymous
    assert anonymous.seen("x-jwt-sub") == []

    signed_in = call(envoy, "/public/page", keys.token("alice"))
    assert signed_in.status == 200, signed_in
    assert signed_in.seen("x-jwt-sub") == ["alice"]

    expired = keys.token("alice", expires_in=-600, issued_ago=1200)
    assert_denied(call(envoy, "/public/page", expired), 401, "invalid_token")


def test_host_condition(envoy):
    assert call(envoy, "/local/x", headers={"Host": "localhost"}).status == 200
    other = call(envoy, "/local/x", headers={"Host": "elsewhere.test"})
    assert other.status == 403, other  # no rule matches: fail closed
    assert other.upstream is None


# --- 401: no token / invalid token -----------------------------------------------------------
def test_missing_token_is_401_with_challenge(envoy):
    answer = call(envoy, "/api/items")
    assert_denied(answer, 401, None)
    assert isinstance(answer.json, dict) and "error" in answer.json, answer


def test_other_authorization_scheme_counts_as_no_token(envoy):
    answer = call(envoy, "/api/items", headers={"Authorization": "Basic YWxpY2U6c2VjcmV0"})
    assert answer.status == 401, answer
    assert answer.upstream is None


def test_expired_token(envoy, keys):
    token = keys.token("alice", scope="read", expires_in=-600, issued_ago=1200)
    assert_denied(call(envoy, "/api/items", token), 401, "invalid_token")


def test_expired_within_clock_skew_is_accepted(envoy, keys):
    token = keys.token("alice", scope="read", expires_in=-5, issued_ago=600)  # skew is 30s
    assert call(envoy, "/api/items", token).status == 200


def test_not_yet_valid_token(envoy, keys):
    claims = keys.claims("alice", scope="read", expires_in=7200)
    claims["nbf"] = claims["iat"] = int(time.time()) + 3600
    assert_denied(call(envoy, "/api/items", keys.trusted.token(claims)), 401, "invalid_token")


def test_token_without_exp_is_rejected(envoy, keys):
    claims = keys.claims("alice", scope="read")
    del claims["exp"]
    assert_denied(call(envoy, "/api/items", keys.trusted.token(claims)), 401, "invalid_token")


def test_lifetime_longer_than_max_is_rejected(envoy, keys):
    token = keys.token("alice", scope="read", expires_in=3 * 86400)
    assert_denied(call(envoy, "/api/items", token), 401, "invalid_token")


def test_tampered_signature(envoy, keys):
    token = mint.tamper(keys.token("alice", scope="read"))
    assert_denied(call(envoy, "/api/items", token), 401, "invalid_token")


def test_tampered_payload(envoy, keys):
    head, _, sig = keys.token("alice", scope="read").split(".")
    forged = keys.claims("mallory", scope="read")
    token = f"{head}.{mint.b64url(json.dumps(forged).encode())}.{sig}"
    assert_denied(call(envoy, "/api/items", token), 401, "invalid_token")


def test_signed_by_an_unknown_key_with_a_known_kid(envoy, keys):
    token = keys.token("alice", scope="read", signer=keys.attacker)
    assert_denied(call(envoy, "/api/items", token), 401, "invalid_token")


def test_wrong_issuer(envoy, keys):
    token = keys.token("alice", scope="read", iss="https://evil.example")
    assert_denied(call(envoy, "/api/items", token), 401, "invalid_token")


def test_wrong_audience(envoy, keys):
    token = keys.token("alice", scope="read", aud="someone-else")
    assert_denied(call(envoy, "/api/items", token), 401, "invalid_token")


def test_audience_array_with_a_match_is_accepted(envoy, keys):
    token = keys.token("alice", scope="read", aud=["other", "e2e-api"])
    assert call(envoy, "/api/items", token).status == 200


def test_alg_none(envoy, keys):
    token = mint.unsigned_token(keys.claims("alice", scope="read"))
    assert_denied(call(envoy, "/api/items", token), 401, "invalid_token")


def test_hs256_keyed_with_the_public_key(envoy, keys):
    token = hs256_with_public_key(keys, keys.claims("alice", scope="read"))
    assert_denied(call(envoy, "/api/items", token), 401, "invalid_token")


@pytest.mark.parametrize("garbage", ["not-a-jwt", "a.b.c", "....", "eyJhbGciOiJSUzI1NiJ9.e30."])
def test_garbage_tokens(envoy, garbage):
    assert_denied(call(envoy, "/api/items", garbage), 401, "invalid_token")


def test_oversized_token(envoy, keys):
    token = keys.token("alice", scope="read", padding="x" * 9000)  # max_token_bytes is 8192
    answer = call(envoy, "/api/items", token)
    assert answer.status == 401, answer
    assert answer.upstream is None


# --- 403: authenticated but not allowed ------------------------------------------------------
def test_missing_scope_is_403_insufficient_scope(envoy, keys):
    answer = call(envoy, "/api/items", keys.token("alice", scope="profile email"))
    assert_denied(answer, 403, "insufficient_scope")
    assert 'scope="read"' in answer.www_authenticate, answer


def test_no_matching_rule_is_403(envoy, keys):
    token = keys.token("alice", scope="read")
    other_path = call(envoy, "/elsewhere", token)
    assert other_path.status == 403, other_path
    assert other_path.upstream is None
    wrong_method = call(envoy, "/api/items", token, method="POST")
    assert wrong_method.status == 403, wrong_method
    assert wrong_method.upstream is None


# --- logging and the two worker VMs ----------------------------------------------------------
def test_decision_lines_are_logged(envoy, keys):
    call(envoy, "/api/items", keys.token("dave", scope="read"))
    call(envoy, "/api/items")
    assert envoy.wait_for_log("verdict=deny", timeout=5)
    lines = decision_lines(envoy)
    # rule names may be quoted: rule="read"
    assert any("verdict=allow" in line and re.search(r'rule="?read\b', line) for line in lines), lines[-5:]
    deny = [line for line in lines if "verdict=deny" in line]
    assert deny and all("mode=enforce" in line and "reason=" in line for line in deny), deny[-5:]


def test_both_worker_vms_answer(envoy, keys):
    """--concurrency 2: each worker runs its own plugin VM; every connection is new, so
    the kernel spreads them over both workers. Both must give the same answers."""
    good = keys.token("erin", scope="read")
    before = len(decision_lines(envoy))
    for i in range(30):
        if i % 2:
            assert call(envoy, "/api/items", good).status == 200
        else:
            assert call(envoy, "/api/items", mint.tamper(good)).status == 401
    deadline = time.monotonic() + 5
    while len(decision_lines(envoy)) < before + 30 and time.monotonic() < deadline:
        time.sleep(0.05)
    threads = {worker_thread(line) for line in decision_lines(envoy)[before:]}
    assert len(threads) >= 2, f"all decisions came from one worker thread: {threads}"
