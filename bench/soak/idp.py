"""A fake identity provider for the soak test: serves a JWKS on loopback and injects faults.

A real IdP cannot be told to fail on cue, which is the whole point of the soak test, so this
one can. It serves `GET <any path>` with the JWKS of the keys published so far, or, depending
on the current mode, with one of the failures an operator sees in production:

| mode      | what the plugin's callout gets                                                 |
| --------- | ------------------------------------------------------------------------------ |
| `ok`      | 200, `{"keys": [...]}`, `Cache-Control: max-age=<refresh>`                     |
| `503`     | 503 with a small text body                                                     |
| `refused` | no listener at all: the socket is closed, so connecting is refused (RST)       |
| `hang`    | the request is read, then nothing is sent until `hang_seconds` have passed (past the callout timeout) |
| `html`    | 200 with an HTML error page (a captive portal, a misrouted load balancer)      |
| `empty`   | 200 with `{"keys": []}`                                                        |

Every request is counted against the phase label current when it arrived, and recorded with
its arrival time, so the soak report can say how many callouts the plugin made per phase and
whether its VMs fetched in lockstep. Every answer closes its connection (HTTP/1.0), so a
pooled connection can never carry a callout past a `refused` listener.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODES = ("ok", "503", "refused", "hang", "html", "empty")

HTML_PAGE = (b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
             b"<body><h1>Bad Gateway</h1><p>The upstream is being updated.</p></body></html>\n")


class FakeIdp:
    """The JWKS server. Thread-safe: the soak runner switches modes and phases while Envoy's
    callouts are being served on the server's threads."""

    def __init__(self, max_age: int, hang_seconds: float, host: str = "127.0.0.1") -> None:
        self.host = host
        self.max_age = max_age
        self.hang_seconds = hang_seconds
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._mode = "ok"
        self._phase = "start"
        self._keys: list[dict[str, Any]] = []
        self._counts: Counter[str] = Counter()
        self._log: list[dict[str, Any]] = []
        self._unhang = threading.Event()  # set to release hanging requests early
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = self._listen(0)

    # --- control ------------------------------------------------------------------------
    def publish(self, jwks_keys: list[dict[str, Any]]) -> None:
        with self._lock:
            self._keys = list(jwks_keys)

    def set_phase(self, phase: str) -> None:
        with self._lock:
            self._phase = phase

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown IdP mode {mode!r}")
        with self._lock:
            previous, self._mode = self._mode, mode
        if previous == "hang" and mode != "hang":
            self._unhang.set()  # hanging callouts end (unanswered) with the hang
        if mode == "hang":
            self._unhang.clear()
        if mode == "refused" and previous != "refused":
            self._close()
        elif previous == "refused" and mode != "refused":
            self._listen(self.port)

    def requests_in(self, phase: str) -> int:
        with self._lock:
            return self._counts[phase]

    def request_log(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._log)

    def stop(self) -> None:
        self._unhang.set()
        self._close()

    # --- the server ---------------------------------------------------------------------
    def _listen(self, port: int) -> int:
        idp = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection, see the module doc
            server_version = "fake-idp/1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                idp._serve(self)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer((self.host, port), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, name="fake-idp", daemon=True)
        thread.start()
        self._server, self._thread = server, thread
        return int(server.server_address[1])

    def _close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            mode, phase, keys = self._mode, self._phase, self._keys
            self._counts[phase] += 1
            self._log.append({"t": round(time.monotonic() - self.started, 3), "phase": phase,
                              "mode": mode, "path": handler.path})
        if mode == "hang":
            # Read, then say nothing until well past the callout timeout (or the hang ends),
            # and close without an answer.
            self._unhang.wait(self.hang_seconds)
            try:
                handler.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            handler.close_connection = True
            return
        if mode == "503":
            self._answer(handler, 503, "text/plain", b"service unavailable\n")
        elif mode == "html":
            self._answer(handler, 200, "text/html; charset=utf-8", HTML_PAGE)
        elif mode == "empty":
            self._answer(handler, 200, "application/json", b'{"keys": []}')
        else:  # "ok" ("refused" never gets here: nothing listens)
            self._answer(handler, 200, "application/json", json.dumps({"keys": keys}).encode())

    def _answer(self, handler: BaseHTTPRequestHandler, status: int, content_type: str, body: bytes) -> None:
        try:
            handler.send_response(status)
            handler.send_header("content-type", content_type)
            handler.send_header("cache-control", f"public, max-age={self.max_age}")
            handler.send_header("content-length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
        except OSError:
            pass  # Envoy gave up on the callout first
