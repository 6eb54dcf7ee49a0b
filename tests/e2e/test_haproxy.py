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
from test_remote_keys import JwksServer

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


def tls_files(directory) -> tuple[str, str, str]:
    """A CA and a server certificate for 127.0.0.1 it signed: (ca.pem, cert.pem, key.pem)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "e2e test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = [str(directory / n) for n in ("ca.pem", "cert.pem", "key.pem")]
    for path, data in zip(paths, [ca.public_bytes(serialization.Encoding.PEM),
                                  cert.public_bytes(serialization.Encoding.PEM),
                                  key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption())]):
        with open(path, "wb") as f:
            f.write(data)
    return paths[0], paths[1], paths[2]


def test_keys_fetched_over_tls_trust_only_the_given_ca(start_envoy, keys, tmp_path):
    import ssl

    ca, cert, key = tls_files(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    idp = JwksServer(tls=context)
    idp.serve(keys.trusted)
    try:
        config = base_config(keys, provider={
            "remote_jwks": {"cluster": "idp", "uri": f"https://127.0.0.1:{idp.port}/jwks", "timeout_ms": 2000}})
        del config["providers"]["e2e"]["jwks"]
        token = keys.token("alice", scope="read")
        trusting = start_envoy(config, idp_url=f"https://127.0.0.1:{idp.port}", agent_args=("--ca-file", ca))
        answer = call(trusting, "/api/items", token)
        assert answer.status == 200 and answer.seen("x-jwt-sub") == ["alice"], answer
        fetched = idp.fetches
        assert fetched >= 1
        # The system's roots do not know this CA: no keys, so no pass (503 while none were ever fetched).
        distrusting = start_envoy(config, idp_url=f"https://127.0.0.1:{idp.port}")
        answer = call(distrusting, "/api/items", token)
        assert answer.status == 503 and answer.upstream is None, answer
        assert idp.fetches == fetched, "the TLS handshake must fail before any request is sent"
    finally:
        idp.stop()

