"""What only HAProxy's side has: the agent killed, stopped or too slow, requests larger than an
SPOP frame, HAProxy's health checks of the agent, keep-alive. In every case the request is refused
(503, never forwarded unchecked) until the agent answers again."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import requests

from e2e_support import Keys, base_config, call
from haproxy_runner import HaproxyProcess

pytestmark = pytest.mark.haproxy_only


def refused_unchecked(answer) -> bool:
    """The fail-closed answer: 503, not forwarded."""
    return answer.status == 503 and answer.upstream is None


@pytest.fixture(scope="module")
def haproxy(start_envoy, keys: Keys) -> HaproxyProcess:
    return start_envoy(base_config(keys), concurrency=2)


def wait(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_agent_killed_under_traffic_refuses_then_recovers(haproxy, keys):
    token = keys.token("alice", scope="read")
    forged = keys.token("mallory", signer=keys.attacker, scope="read")
    results: list[tuple[float, int, bool]] = []
    stop = threading.Event()

    def traffic() -> None:
        with requests.Session() as s:
            while not stop.is_set():
                for t, good in ((token, True), (forged, False)):
                    try:
                        r = s.get(haproxy.url("/api/items"), headers={"Authorization": f"Bearer {t}"}, timeout=10)
                        reached = "raw_headers" in r.text
                        results.append((time.monotonic(), r.status_code, reached and not good))
                    except requests.RequestException:
                        results.append((time.monotonic(), 0, False))

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        time.sleep(1.0)
        haproxy.kill_agent()
        killed = time.monotonic()
        time.sleep(2.0)
        haproxy.start_agent()
        assert wait(haproxy.agent_ready), "HAProxy's health check did not see the agent come back"
        time.sleep(1.0)
    finally:
        stop.set()
        worker.join(30)
    assert not any(leak for _, _, leak in results), "a forged token reached the upstream"
    during = [status for at, status, _ in results if killed + 0.2 < at < killed + 2.0]
    assert during and all(s == 503 for s in during), f"while the agent was down: {sorted(set(during))}"
    after = [status for at, status, _ in results[-6:]]
    assert set(after) <= {200, 401} and 200 in after, f"after the restart: {after}"


def test_a_stopped_agent_is_timed_out_and_refused(haproxy, keys):
    token = keys.token("alice", scope="read")
    assert call(haproxy, "/api/items", token).status == 200
    os.kill(haproxy.agent.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        answer = call(haproxy, "/api/items", token)
        took = time.monotonic() - started
    finally:
        os.kill(haproxy.agent.pid, signal.SIGCONT)
    assert refused_unchecked(answer), answer
    # timeout processing: the plugin's hold budget (1 s, inline keys) + 0.5 s.
    assert 1.0 <= took < 8.0, f"answered after {took:.1f}s"
    assert wait(lambda: call(haproxy, "/api/items", token).status == 200)


def test_headers_larger_than_an_spop_frame_are_refused(start_envoy, keys):
    small_frames = start_envoy(base_config(keys), agent_args=("--max-frame-size", "1024"))
    token = keys.token("alice", scope="read")
    assert call(small_frames, "/api/items", token).status == 200
    answer = call(small_frames, "/api/items", token, headers={"X-Filler": "f" * 3000})
    assert refused_unchecked(answer), answer
    assert call(small_frames, "/api/items", token).status == 200, "later requests still go through"


def test_health_checks_follow_the_agent(haproxy, keys):
    assert haproxy.agent_ready()
    haproxy.kill_agent()
    assert wait(lambda: not haproxy.agent_ready(), 10), "HAProxy kept the dead agent up"
    assert refused_unchecked(call(haproxy, "/healthz"))
    haproxy.start_agent()
    assert wait(haproxy.agent_ready), "HAProxy did not see the agent come back"
    assert call(haproxy, "/healthz").status == 200


def test_keep_alive_many_requests_on_one_connection(haproxy, keys):
    good = keys.token("alice", scope="read")
    bad = keys.token("alice", signer=keys.attacker, scope="read")
    with requests.Session() as s:
        for i in range(300):
            token = good if i % 3 else bad
            r = s.get(haproxy.url("/api/items"), headers={"Authorization": f"Bearer {token}"}, timeout=10)
            if token is good:
                assert r.status_code == 200 and '"x-jwt-sub"' in r.text, (i, r.status_code, r.text[:200])
            else:
                assert r.status_code == 401 and "raw_headers" not in r.text, (i, r.status_code)


def test_agent_metrics_count_decisions(haproxy, keys):
    call(haproxy, "/api/items", keys.token("alice", scope="read"))
    text = requests.get(haproxy.admin_url("/metrics"), timeout=5).text
    decided = [line for line in text.splitlines() if line.startswith("portcullis_spoa_decided_total ")]
    assert decided and int(decided[0].split()[1]) > 0, text
    assert "portcullis_requests_total" in text or "portcullis_decisions" in text or "portcullis_" in text
