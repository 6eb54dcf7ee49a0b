#!/usr/bin/env python3
"""A tiny upstream for the demo and the e2e tests: answers every request with 200 and
a JSON description of what it received.

    {"method": "GET", "path": "/api/items?x=1",
     "headers": {"x-jwt-sub": "alice", ...},          # lower-cased names; repeats joined by ", "
     "raw_headers": [["x-jwt-sub", "alice"], ...],    # every header line, in order
     "upstream": "admin-pool"}                        # its --name, when given (routing demos)

Run: python3 examples/envoy/echo_upstream.py [--host 127.0.0.1] [--port 10001]
Import: `serve(host, port)` starts it in a background thread and returns the server
(`server.server_address[1]` is the port; call `server.shutdown()` to stop it).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Envoy's connection pool expects
    server_version = "portcullis-echo/1"
    quiet = True
    name: str | None = None

    def _echo(self) -> None:
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            body = self._read_chunked()
        else:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length > 0 else b""
        raw = [[name.lower(), value] for name, value in self.headers.items()]
        joined: dict[str, str] = {}
        for name, value in raw:
            joined[name] = f"{joined[name]}, {value}" if name in joined else value
        payload = {
            "method": self.command,
            "path": self.path,
            "headers": joined,
            "raw_headers": raw,
            "body_bytes": len(body),
        }
        if self.name is not None:
            payload["upstream"] = self.name
        out = (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    def _read_chunked(self) -> bytes:
        """A chunked request body (Envoy sends one when a filter removed content-length)."""
        body = b""
        while True:
            size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return body
            body += self.rfile.read(size)
            self.rfile.readline()  # the CRLF after the chunk

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _echo

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib name)
        if not self.quiet:
            sys.stderr.write("echo-upstream: " + (format % args) + "\n")


class QuietServer(ThreadingHTTPServer):
    """A proxy closing its idle keep-alive connections (HAProxy resets them) is not an error."""

    def handle_error(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


def serve(host: str = "127.0.0.1", port: int = 0, quiet: bool = True,
          name: str | None = None) -> ThreadingHTTPServer:
    """Start the echo server in a daemon thread; port 0 picks a free port. A `name` is
    echoed back, so a client can tell which of several upstreams answered."""
    handler = type("Handler", (EchoHandler,), {"quiet": quiet, "name": name})
    server = QuietServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="echo-upstream", daemon=True).start()
    return server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=10001)
    parser.add_argument("--verbose", action="store_true", help="log each request to stderr")
    parser.add_argument("--name", help="echoed back as \"upstream\", to tell upstreams apart")
    args = parser.parse_args()
    server = serve(args.host, args.port, quiet=not args.verbose, name=args.name)
    print(f"echo upstream listening on http://{args.host}:{server.server_address[1]}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
