#!/usr/bin/env python3
"""Run Portcullis in a real Envoy (or HAProxy) in front of an echo upstream, with fresh keys and tokens.

Called by scripts/demo (which first runs scripts/setup and scripts/build).
  demo.py                  start everything, print curl commands, stay up until Ctrl-C
  demo.py --check          start everything, run the same requests, report, stop
  demo.py --proxy haproxy  the same behind HAProxy, the plugin in portcullis-spoa
  demo.py --login          browser sign-in instead: a real OpenID provider (the e2e suite's
                           oidc-provider) and a login policy; open the printed URL and sign in
  demo.py --login --check  the same walk in headless Chromium, report, stop
Ports: PORTCULLIS_LISTEN_PORT (10000), PORTCULLIS_ADMIN_PORT (9901), PORTCULLIS_UPSTREAM_PORT (10001),
PORTCULLIS_IDP_PORT (10002: the JWKS server, or with --login the OpenID provider).
Files (keys, tokens, rendered config, Envoy log) go to out/demo/ (or PORTCULLIS_DEMO_DIR),
those of --login to its login/ subdirectory.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_login  # noqa: E402
import mint  # noqa: E402
from envoy_runner import DEFAULT_WASM, REPO, EnvoyError, EnvoyProcess  # noqa: E402
from haproxy_runner import HaproxyError, HaproxyProcess  # noqa: E402

ISSUER = "https://issuer.demo.test"
AUDIENCE = "demo-api"
POLICY = REPO / "examples" / "envoy" / "policy.json"
UPSTREAM = REPO / "examples" / "envoy" / "echo_upstream.py"
OUT = Path(os.environ.get("PORTCULLIS_DEMO_DIR", REPO / "out" / "demo")).resolve()
PROXY_NAMES = {"envoy": "Envoy", "haproxy": "HAProxy"}


@dataclass
class Case:
    what: str
    method: str
    path: str
    token_var: str | None = None  # shell variable holding the token for `Authorization: Bearer`
    headers: dict[str, str] = field(default_factory=dict)
    expect_status: int = 200
    expect_text: str = ""  # what the answer should show, for people
    expect_header: tuple[str, str] | None = None  # (response header, substring) checked by --check
    expect_upstream: tuple[str, str] | None = None  # (request header seen upstream, exact value)


CASES = [
    Case("health check, no token (rule health: auth none)", "GET", "/healthz",
         expect_text="200, the upstream's echo"),
    Case("no token", "GET", "/api/items",
         expect_status=401, expect_text='401, WWW-Authenticate: Bearer realm="portcullis"',
         expect_header=("www-authenticate", 'Bearer realm="portcullis"')),
    Case("reader token (scope read)", "GET", "/api/items", "READER",
         expect_text="200; the upstream saw x-jwt-sub: alice, x-jwt-scope: read",
         expect_upstream=("x-jwt-sub", "alice")),
    Case("reader token with a spoofed claim header", "GET", "/api/items", "READER",
         headers={"x-jwt-sub": "mallory"},
         expect_text="200; the upstream saw x-jwt-sub: alice (the client's value was dropped)",
         expect_upstream=("x-jwt-sub", "alice")),
    Case("expired token", "GET", "/api/items", "EXPIRED",
         expect_status=401, expect_text='401, WWW-Authenticate: ... error="invalid_token"',
         expect_header=("www-authenticate", 'error="invalid_token"')),
    Case("reader token, but writing needs scope write", "POST", "/api/items", "READER",
         expect_status=403, expect_text='403, WWW-Authenticate: ... error="insufficient_scope"',
         expect_header=("www-authenticate", 'error="insufficient_scope"')),
    Case("reader token on the admin API", "GET", "/admin/users", "READER",
         expect_status=403, expect_text="403 (needs role admin and an @example.com email)"),
    Case("admin token (role admin, bob@example.com)", "GET", "/admin/users", "ADMIN",
         expect_text="200; the upstream saw x-jwt-sub: bob, x-jwt-roles",
         expect_upstream=("x-jwt-sub", "bob")),
]


def port_from_env(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    try:
        return int(value)
    except ValueError:
        sys.exit(f"demo: {name}={value!r} is not a port number")


def ensure_free(port: int, env_name: str) -> None:
    with socket.socket() as sock:
        # As the proxy binds: connections of an earlier run left in TIME_WAIT do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sys.exit(f"demo: port {port} on 127.0.0.1 is in use; choose another with {env_name}=...")


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0, what: str = "echo upstream") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} not listening on {port} within {timeout:.0f}s")


class JwksServer:
    """The token demo's identity provider: a plain HTTP server publishing the keys directory
    (jwks.json), with the start/stop/running of the login demo's OidcProvider."""

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(self.directory),
             str(self.port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_port(self.port, self.proc, what="the key server")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.running():
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def mint_tokens(signer: mint.Signer) -> dict[str, str]:
    reader = mint.claims(ISSUER, AUDIENCE, "alice", 3600, scope="read", email="alice@example.org")
    admin = mint.claims(ISSUER, AUDIENCE, "bob", 3600, scope="read write", email="bob@example.com",
                        realm_access={"roles": ["admin"]})
    expired = mint.claims(ISSUER, AUDIENCE, "alice", -600, issued_ago=1200, scope="read")
    return {"READER": signer.token(reader), "ADMIN": signer.token(admin), "EXPIRED": signer.token(expired)}


def shown(path: Path) -> str:
    """A path relative to the repository when it is inside it."""
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def curl_command(case: Case, base: str) -> str:
    parts = ["curl", "-s", "-i"]
    if case.method != "GET":
        parts += ["-X", case.method]
    cmd = " ".join(shlex.quote(p) for p in parts) + " " + shlex.quote(base + case.path)
    if case.token_var:
        cmd += f' -H "Authorization: Bearer ${case.token_var}"'
    for name, value in case.headers.items():
        cmd += " -H " + shlex.quote(f"{name}: {value}")
    return cmd


def run_case(case: Case, base: str, tokens: dict[str, str]) -> tuple[bool, str]:
    headers = dict(case.headers)
    if case.token_var:
        headers["Authorization"] = f"Bearer {tokens[case.token_var]}"
    req = urllib.request.Request(base + case.path, method=case.method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 (loopback)
            status, resp_headers, body = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        status, resp_headers, body = err.code, err.headers, err.read()
    problems = []
    if status != case.expect_status:
        problems.append(f"status {status}, expected {case.expect_status}")
    if case.expect_header:
        name, needle = case.expect_header
        got = resp_headers.get(name, "")
        if needle not in got:
            problems.append(f"{name}: {got!r} lacks {needle!r}")
    if case.expect_upstream and status == 200:
        name, value = case.expect_upstream
        try:
            seen = [v for n, v in json.loads(body)["raw_headers"] if n == name]
        except (ValueError, KeyError):
            seen = ["<not the echo upstream's answer>"]
        if seen != [value]:
            problems.append(f"upstream saw {name}: {seen}, expected [{value!r}]")
    return not problems, "; ".join(problems) or f"status {status}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="run the requests, report, and exit")
    parser.add_argument("--wasm", type=Path, default=Path(os.environ.get("PORTCULLIS_WASM", DEFAULT_WASM)))
    parser.add_argument("--proxy", choices=sorted(PROXY_NAMES), default="envoy",
                        help="the proxy in front of the upstream (haproxy: the plugin runs in portcullis-spoa)")
    parser.add_argument("--login", action="store_true",
                        help="browser sign-in (OIDC code flow + PKCE) at a demo OpenID provider")
    args = parser.parse_args()
    proxy_name = PROXY_NAMES[args.proxy]

    listen = port_from_env("PORTCULLIS_LISTEN_PORT", 10000)
    admin = port_from_env("PORTCULLIS_ADMIN_PORT", 9901)
    upstream_port = port_from_env("PORTCULLIS_UPSTREAM_PORT", 10001)
    idp_port = port_from_env("PORTCULLIS_IDP_PORT", 10002)
    for port, name in ((listen, "PORTCULLIS_LISTEN_PORT"), (admin, "PORTCULLIS_ADMIN_PORT"),
                       (upstream_port, "PORTCULLIS_UPSTREAM_PORT"), (idp_port, "PORTCULLIS_IDP_PORT")):
        ensure_free(port, name)

    out = OUT / "login" if args.login else OUT
    out.mkdir(parents=True, exist_ok=True)
    tokens: dict[str, str] = {}
    if args.login:
        # A real OpenID provider; the plugin reaches its keys and token endpoint through the
        # "idp" cluster, the browser its sign-in pages directly.
        idp: Any = demo_login.make_idp(out / "idp", listen, idp_port)
        policy = demo_login.login_policy(idp)
        (out / "policy.json").write_text(json.dumps(policy, indent=2) + "\n")
    else:
        signer = mint.Signer.generate("demo-" + time.strftime("%Y%m%d%H%M%S"))
        signer.save(OUT / "keys")
        policy = json.loads(POLICY.read_text())
        # The demo is its own identity provider: a plain HTTP server publishes OUT/keys/jwks.json,
        # and the plugin fetches it through Envoy's "idp" cluster.
        policy["providers"]["demo"]["remote_jwks"]["uri"] = f"http://127.0.0.1:{idp_port}/jwks.json"
        (OUT / "policy.json").write_text(json.dumps(policy, indent=2) + "\n")
        tokens = mint_tokens(signer)
        (OUT / "tokens.env").write_text("".join(f"export {k}={v}\n" for k, v in tokens.items()))
        idp = JwksServer(OUT / "keys", idp_port)

    # SIGTERM/SIGHUP end the demo like Ctrl-C does, so the children are always cleaned up.
    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)

    upstream = subprocess.Popen(
        [sys.executable, str(UPSTREAM), "--port", str(upstream_port)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True,
    )
    proxy_class = HaproxyProcess if args.proxy == "haproxy" else EnvoyProcess
    envoy = proxy_class(args.wasm, policy, upstream_port, out, listen_port=listen, admin_port=admin,
                        idp_port=idp_port)
    what = "the IdP" if args.login else "the key server"
    try:
        wait_port(upstream_port, upstream)
        idp.start()
        started = time.monotonic()
        envoy.start(timeout=90)
        print(f"{proxy_name} {envoy.url('/')} is ready ({time.monotonic() - started:.1f}s; "
              f"admin {envoy.admin_url('/')}, log {shown(envoy.log_path)})")
        base = envoy.url("").rstrip("/")
        if args.login and args.check:
            return demo_login.check(base, idp, envoy)
        if args.login:
            demo_login.print_instructions(base, idp, envoy, out / "policy.json")
        elif args.check:
            return check(base, tokens, envoy, proxy_name)
        else:
            print_instructions(base, tokens, envoy, proxy_name)
        while True:
            if not envoy.running():
                print(f"demo: {proxy_name} (or its agent) exited\n{envoy.log_tail(40)}", file=sys.stderr)
                return 1
            if upstream.poll() is not None:
                print(f"demo: the echo upstream exited with status {upstream.returncode}", file=sys.stderr)
                return 1
            if not idp.running():
                print(f"demo: {what} exited", file=sys.stderr)
                return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        print(f"\nstopping {proxy_name}, {what} and the echo upstream")
        return 0
    except (EnvoyError, HaproxyError, RuntimeError) as err:  # IdpError, and the waits, are RuntimeErrors
        print(f"demo: {err}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
        envoy.stop()
        idp.stop()
        if upstream.poll() is None:
            upstream.terminate()
            try:
                upstream.wait(5)
            except subprocess.TimeoutExpired:
                upstream.kill()
                upstream.wait(5)


def print_instructions(base: str, tokens: dict[str, str], proxy: EnvoyProcess | HaproxyProcess, name: str) -> None:
    rel = shown(OUT / "tokens.env")
    print(f"\nFresh tokens (also in {rel}; in another shell: source {rel}):\n")
    for name, token in tokens.items():
        print(f"export {name}={token}")
    print("\nTry these (each line says what it should answer):\n")
    for case in CASES:
        print(f"# {case.what} -> {case.expect_text}")
        print(curl_command(case, base) + "\n")
    print("# the same token in a query parameter or a cookie (the demo provider's token_sources allow both)")
    print(f"curl -s -i '{base}/api/items?access_token='\"$READER\"")
    print(f'curl -s -i {base}/api/items -b "session=$READER"\n')
    log = getattr(proxy, "agent_log_path", proxy.log_path)
    print(f"Decisions are logged by {name if name == 'Envoy' else 'portcullis-spoa'}: "
          f"grep 'portcullis decision' {shown(log)}")
    print("Press Ctrl-C to stop.", flush=True)


def check(base: str, tokens: dict[str, str], envoy: EnvoyProcess | HaproxyProcess, name: str) -> int:
    passed = failed = 0
    for case in CASES:
        ok, detail = run_case(case, base, tokens)
        passed += ok
        failed += not ok
        print(f"{'PASS' if ok else 'FAIL'}  {case.method:4} {case.path:14} {case.what}: {detail}")
    envoy.wait_for_log("portcullis decision", timeout=3)
    decisions = [line for line in envoy.log_text().splitlines() if "portcullis decision" in line]
    print(f"{name} logged {len(decisions)} decision line(s); the last one:")
    print("  " + (decisions[-1].split("portcullis decision", 1)[-1].strip() if decisions else "(none)"))
    print(f"demo check: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
