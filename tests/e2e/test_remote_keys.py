"""Keys fetched from a real JWKS server on loopback through an Envoy cluster: cold start,
rotation accepted at once, old keys kept while published, and known keys still served after
the server is gone."""

from __future__ import annotations

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from e2e_support import Keys, base_config, call, mint


class JwksServer:
    """Serves whatever JWKS the test sets; counts the fetches. Over TLS when given a context."""

    def __init__(self, tls: "ssl.SSLContext | None" = None) -> None:
        self.body = b'{"keys": []}'
        self.fetches = 0
        self.user_agents: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                outer.fetches += 1
                outer.user_agents.append(self.headers.get("user-agent", ""))
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("cache-control", "max-age=300")
                self.send_header("content-length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def serve(self, *signers: mint.Signer) -> None:
        self.body = json.dumps({"keys": [s.jwk() for s in signers]}).encode()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.stop()


def test_remote_keys_rotate_and_survive_an_outage(start_envoy, wasm, upstream, keys: Keys, jwks_server):
    first = keys.trusted
    second = mint.Signer.generate("e2e-k2")
    jwks_server.serve(first)
    config = base_config(keys, provider={
        "jwks": None,
        "remote_jwks": {"cluster": "idp", "uri": f"http://127.0.0.1:{jwks_server.port}/jwks",
                        "timeout_ms": 2000, "unknown_kid_refetch_seconds": 1},
    })
    del config["providers"]["e2e"]["jwks"]
    envoy = start_envoy(config, concurrency=2, idp_port=jwks_server.port)

    answer = call(envoy, "/api/items", keys.token(scope="read"))
    assert answer.status == 200, answer
    assert answer.seen("x-jwt-sub") == ["alice"]
    assert jwks_server.fetches >= 1
    assert all(ua.startswith("portcullis/") for ua in jwks_server.user_agents)

    # Rotation: the IdP publishes a second key; a token signed with it works at once.
    jwks_server.serve(first, second)
    answer = call(envoy, "/api/items", keys.token("bob", signer=second, scope="read"))
    assert answer.status == 200, answer
    assert answer.seen("x-jwt-sub") == ["bob"]
    # The old key is still published, so its tokens still pass.
    assert call(envoy, "/api/items", keys.token("carol", scope="read")).status == 200

    # Outage: the JWKS server is gone; tokens signed with known keys still verify.
    jwks_server.stop()
    for sub in ("dave", "erin"):
        answer = call(envoy, "/api/items", keys.token(sub, signer=second, scope="read"))
        assert answer.status == 200, answer
    assert envoy.wait_for_log("key(s) fetched")
