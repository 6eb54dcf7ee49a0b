"""Observe mode: decisions are logged, nothing is denied."""

from __future__ import annotations

import pytest

import mint
from e2e_support import Keys, base_config, call, decision_lines
from envoy_runner import EnvoyProcess


@pytest.fixture(scope="module")
def envoy(start_envoy, keys: Keys) -> EnvoyProcess:
    return start_envoy(base_config(keys, mode="observe"))


@pytest.mark.parametrize("case", ["missing", "expired", "tampered", "insufficient_scope"])
def test_would_be_denied_request_passes_and_is_logged_as_deny(envoy, keys, case):
    token = {
        "missing": None,
        "expired": keys.token("alice", scope="read", expires_in=-600, issued_ago=1200),
        "tampered": mint.tamper(keys.token("alice", scope="read")),
        "insufficient_scope": keys.token("alice", scope="profile"),
    }[case]
    before = len(decision_lines(envoy))
    answer = call(envoy, f"/api/{case}", token)
    assert answer.status == 200, answer
    assert answer.upstream is not None and answer.upstream["path"] == f"/api/{case}"
    assert envoy.wait_for_log("verdict=deny", timeout=5)
    new = decision_lines(envoy)[before:]
    assert any("verdict=deny" in line and "mode=observe" in line for line in new), new


def test_allowed_request_still_gets_claim_headers(envoy, keys):
    answer = call(envoy, "/api/items", keys.token("alice", scope="read"))
    assert answer.status == 200, answer
    assert answer.seen("x-jwt-sub") == ["alice"]


def test_spoofed_claim_headers_do_not_pass_in_observe_mode(envoy):
    """Observe mode lets the request through, but must not let a client pose as someone."""
    answer = call(envoy, "/api/items", headers={"x-jwt-sub": "mallory"})
    assert answer.status == 200, answer
    assert answer.seen("x-jwt-sub") == []
