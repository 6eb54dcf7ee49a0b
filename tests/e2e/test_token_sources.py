"""Where tokens come from (token_sources) and whether they are forwarded (forward_token)."""

from __future__ import annotations

import base64
import json

import pytest

from e2e_support import Keys, base_config, call
from envoy_runner import EnvoyProcess


@pytest.fixture(scope="module")
def sources_envoy(start_envoy, keys: Keys) -> EnvoyProcess:
    config = base_config(keys, provider={
        "token_sources": [{"query": "access_token"}, {"cookie": "session"}, {"header": "x-api-token"}],
    })
    return start_envoy(config)


@pytest.fixture(scope="module")
def no_forward_envoy(start_envoy, keys: Keys) -> EnvoyProcess:
    return start_envoy(base_config(keys, forward_token=False, payload_header="x-jwt-payload"))


def test_token_in_query_parameter(sources_envoy, keys):
    answer = call(sources_envoy, "/api/items?page=2&access_token=" + keys.token("alice", scope="read"))
    assert answer.status == 200, answer
    assert answer.seen("x-jwt-sub") == ["alice"]


def test_token_in_cookie(sources_envoy, keys):
    token = keys.token("bob", scope="read")
    answer = call(sources_envoy, "/api/items", headers={"Cookie": f"theme=dark; session={token}; lang=en"})
    assert answer.status == 200, answer
    assert answer.seen("x-jwt-sub") == ["bob"]


def test_token_in_custom_header(sources_envoy, keys):
    answer = call(sources_envoy, "/api/items", headers={"x-api-token": keys.token("carol", scope="read")})
    assert answer.status == 200, answer
    assert answer.seen("x-jwt-sub") == ["carol"]


def test_authorization_header_is_ignored_when_not_a_source(sources_envoy, keys):
    answer = call(sources_envoy, "/api/items", keys.token("alice", scope="read"))
    assert answer.status == 401, answer
    assert answer.upstream is None


def test_invalid_token_in_cookie_is_rejected(sources_envoy, keys):
    token = keys.token("bob", scope="read", iss="https://evil.example")
    answer = call(sources_envoy, "/api/items", cookies={"session": token})
    assert answer.status == 401, answer
    assert 'error="invalid_token"' in answer.www_authenticate


def test_forward_token_false_strips_the_token(no_forward_envoy, keys):
    answer = call(no_forward_envoy, "/api/items", keys.token("alice", scope="read"))
    assert answer.status == 200, answer
    assert answer.seen("x-jwt-sub") == ["alice"]
    assert answer.seen("authorization") == []


def test_payload_header_carries_the_whole_payload(no_forward_envoy, keys):
    claims = keys.claims("alice", scope="read", email="alice@example.com")
    answer = call(no_forward_envoy, "/api/items", keys.trusted.token(claims),
                  headers={"x-jwt-payload": "spoofed"})
    assert answer.status == 200, answer
    values = answer.seen("x-jwt-payload")
    assert len(values) == 1, values
    encoded = values[0]
    assert json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))) == claims
