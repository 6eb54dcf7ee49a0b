"""The browser sign-in part of the demo (`scripts/demo --login [--check]`, run by scripts/demo.py).

The identity provider is the e2e suite's real OpenID provider (oidc-provider on Node.js,
tests/e2e/idp/idp.mjs), started through tests/e2e/oidc_support.py's `OidcProvider`; the
`--check` walk drives Debian's headless Chromium through the same module's `make_browser()`
and `idp_login()`. That module is imported from tests/e2e only when the login demo runs, so
the token demo needs neither Node.js nor Chromium.

- `make_idp(workdir, listen_port, idp_port)`: the provider, its client registered for this
  listener's callback and post-logout URLs on both 127.0.0.1 and localhost.
- `login_policy(idp)`: the plugin policy, with a fresh random cookie key each call.
- `print_instructions(...)`: what to open in a browser, and curl commands.
- `check(...)`: the walk in a headless browser plus two plain HTTP requests; a PASS/FAIL
  table; 0 when everything matched.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

from envoy_runner import REPO, EnvoyProcess

E2E = REPO / "tests" / "e2e"

CLIENT_ID = "portcullis-demo"
CLIENT_SECRET = "demo-secret"
COOKIE = "__Host-portcullis"
CALLBACK = "/oauth2/callback"
LOGOUT = "/oauth2/logout"
SIGNED_OUT = "/public/signed-out"
REALM = 'Bearer realm="portcullis"'
CLAIM_HEADERS = {"sub": "x-user-sub", "email": "x-user-email", "name": "x-user-name"}
CHECK_USER = "demo"
CHECK_EMAIL = "demo@example.test"  # the demo IdP's email for any account: <name>@example.test
# What a browser sends on a navigation: Accept prefers text/html.
HTML = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
JSON = "application/json"


def oidc_support() -> Any:
    """tests/e2e/oidc_support.py (it also puts scripts/ and examples/envoy on sys.path)."""
    if str(E2E) not in sys.path:
        sys.path.insert(0, str(E2E))
    import oidc_support as module

    return module


def origins(listen_port: int) -> list[str]:
    """Both names a browser on this machine may use for the demo; the IdP accepts either."""
    return [f"http://127.0.0.1:{listen_port}", f"http://localhost:{listen_port}"]


def make_idp(workdir: Path, listen_port: int, idp_port: int) -> Any:
    """The demo IdP (not started): one confidential client whose redirect and post-logout URIs
    are this listener's, on 127.0.0.1 and on localhost."""
    return oidc_support().OidcProvider(
        workdir,
        redirect_uris=[origin + CALLBACK for origin in origins(listen_port)],
        post_logout_redirect_uris=[origin + SIGNED_OUT for origin in origins(listen_port)],
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, auth_method="client_secret_basic",
        port=idp_port,
    )


def login_policy(idp: Any) -> dict[str, Any]:
    """A public path, everything else behind browser sign-in, three claim headers. The cookie
    key is new on every call: sessions of an earlier run do not open."""
    cookie_key = base64.b64encode(os.urandom(32)).decode()
    return {
        "mode": "enforce",
        "realm": "portcullis",
        "providers": {
            "demo": {
                "issuer": idp.issuer,
                "audiences": [CLIENT_ID],
                "remote_jwks": {"cluster": "idp", "uri": idp.jwks_uri},
                "login": {
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                    "client_auth": "basic",
                    "scopes": ["openid", "email", "profile"],
                    "authorization_endpoint": idp.authorization_endpoint,
                    "token_endpoint": idp.token_endpoint,
                    "end_session_endpoint": idp.end_session_endpoint,
                    "cluster": "idp",
                    "callback_path": CALLBACK,
                    "logout_path": LOGOUT,
                    "post_logout_path": SIGNED_OUT,
                    "cookie_name": COOKIE,
                    "session_seconds": 8 * 3600,
                    "cookie_keys": [cookie_key],
                },
            }
        },
        "rules": [
            {"name": "public", "match": {"path": {"prefix": "/public"}}, "auth": "none"},
            {"name": "app", "match": {"path": {"prefix": "/"}}, "auth": "login"},
        ],
        "claim_headers": [{"claim": claim, "header": header} for claim, header in CLAIM_HEADERS.items()],
    }


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def print_instructions(base: str, idp: Any, envoy: EnvoyProcess, policy_path: Path) -> None:
    listen = urllib.parse.urlsplit(base).port
    local = f"http://localhost:{listen}"
    print(f"\nBrowser sign-in: every path but /public needs a session; the demo IdP "
          f"(oidc-provider) is {idp.issuer}.\n")
    print(f"Open in a browser:   {base}/      (or {local}/)")
    print("  The demo IdP shows its sign-in form: any user name and any password work (the name")
    print("  becomes the sub, the email is <name>@example.test); then confirm the consent page.")
    print("  Back on the page, the upstream's echo shows the identity headers it received:")
    print("  " + ", ".join(CLAIM_HEADERS.values()) + ".")
    print(f"Sign out:            {base}{LOGOUT}")
    print(f"  (it ends the IdP session too, then lands on {SIGNED_OUT}, a public page)\n")
    print("Without a browser (each line says what it should answer):\n")
    print(f"# an API client, no session -> 401, WWW-Authenticate: {REALM} (curl's Accept: */* counts too)")
    print(f"curl -s -i -H 'Accept: {JSON}' {base}/\n")
    print("# a browser navigation (Accept prefers text/html) -> 302 to the IdP's sign-in page")
    print(f"curl -s -i -H {shlex.quote('Accept: ' + HTML)} {base}/ | grep -i '^location'\n")
    print("# the public path needs no sign-in -> 200, the echo without any x-user-* header")
    print(f"curl -s {base}/public/hello\n")
    print(f"Policy (a fresh cookie key each run): {_shown(policy_path)}; IdP log: {_shown(idp.log_path)}")
    print(f"Decisions are logged by Envoy: grep 'portcullis decision' {_shown(envoy.log_path)}")
    print("Press Ctrl-C to stop.", flush=True)


# --- --check -------------------------------------------------------------------------------------
class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def http_get(url: str, headers: dict[str, str]) -> tuple[int, Any, bytes]:
    """One GET, redirects not followed: (status, headers, body)."""
    req = urllib.request.Request(url, headers=headers)
    try:
        with _OPENER.open(req, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def echo_of(body: bytes | str) -> dict[str, Any]:
    try:
        return dict(json.loads(body))
    except ValueError as err:
        raise AssertionError(f"not the echo upstream's answer: {str(body)[:200]!r}") from err


def page_echo(driver: Any) -> dict[str, Any]:
    """The echo's JSON as Chromium shows it (in a <pre>)."""
    from selenium.webdriver.common.by import By

    pre = driver.find_elements(By.TAG_NAME, "pre")
    return echo_of(pre[0].text if pre else driver.execute_script("return document.body.innerText"))


def wait_for(predicate: Callable[[], Any], what: str, driver: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception:  # the page changed under us: look again  # noqa: BLE001
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"no {what} within {timeout:.0f}s (at {driver.current_url})")


def at_idp_login(driver: Any, idp: Any) -> bool:
    from selenium.webdriver.common.by import By

    return driver.current_url.startswith(idp.url("/interaction/")) and bool(
        driver.find_elements(By.CSS_SELECTOR, 'input[name="prompt"][value="login"]'))


def identity(seen: dict[str, Any]) -> dict[str, str]:
    return {h: seen.get("headers", {}).get(h) for h in CLAIM_HEADERS.values()}


class Table:
    """Runs the check's steps in order and prints one PASS/FAIL line each. A step fails by
    raising (AssertionError with a readable message, or anything the browser throws). When a
    step the rest of the walk stands on fails (`breaks`: the sign-in, the logout), the later
    steps of the walk cannot mean anything, so they are reported as failed without running."""

    def __init__(self) -> None:
        self.passed = self.failed = 0
        self.walk_broken = False

    def step(self, kind: str, where: str, what: str, run: Callable[[], str], walk: bool = True,
             breaks: bool = True) -> None:
        if walk and self.walk_broken:
            ok, detail = False, "not run: an earlier step of the walk failed"
        else:
            try:
                ok, detail = True, run()
            except Exception as err:  # noqa: BLE001 (every failure is a row of the table)
                text = str(err).strip() or type(err).__name__
                ok, detail = False, text.splitlines()[0][:300]
                self.walk_broken = self.walk_broken or (walk and breaks)
        self.passed += ok
        self.failed += not ok
        print(f"{'PASS' if ok else 'FAIL'}  {kind:7} {where:20} {what}: {detail}", flush=True)


def check(base: str, idp: Any, envoy: EnvoyProcess) -> int:
    support = oidc_support()
    table = Table()
    start = base + "/"

    def public() -> str:
        status, _, body = http_get(base + "/public/hello", {"Accept": HTML})
        assert status == 200, f"status {status}, expected 200"
        seen = identity(echo_of(body))
        assert not any(seen.values()), f"the upstream saw identity headers: {seen}"
        return "200, the echo, no x-user-* headers"

    def api_401(cookie: str = "") -> str:
        headers = {"Accept": JSON}
        if cookie:
            headers["Cookie"] = cookie
        status, resp_headers, _ = http_get(start, headers)
        assert status == 401, f"status {status}, expected 401"
        got = resp_headers.get("www-authenticate", "")
        assert REALM in got, f"WWW-Authenticate {got!r} lacks {REALM!r}"
        return f"401, WWW-Authenticate: {got}"

    def navigation_302() -> str:
        status, resp_headers, _ = http_get(start, {"Accept": HTML})
        assert status == 302, f"status {status}, expected 302"
        location = resp_headers.get("location", "")
        assert location.startswith(idp.authorization_endpoint + "?"), f"Location {location[:120]!r}"
        params = support.query_of(location)
        assert params.get("redirect_uri") == base + CALLBACK, f"redirect_uri {params.get('redirect_uri')!r}"
        assert params.get("code_challenge_method") == "S256", "no PKCE S256 challenge"
        return f"302 to {idp.authorization_endpoint} (PKCE S256, redirect_uri {CALLBACK})"

    table.step("http", "GET /public/hello", "the public path, no session", public, walk=False)
    table.step("http", "GET / (JSON)", "an API request, no session", api_401, walk=False)
    table.step("http", "GET / (HTML)", "a browser-like request, no session", navigation_302, walk=False)

    try:
        driver = support.make_browser()
    except Exception as err:  # noqa: BLE001 (no Chromium: every browser step fails)
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        table.walk_broken = True
        print(f"demo: the headless browser did not start: {message} (scripts/setup installs Debian's "
              "chromium and chromium-driver)", file=sys.stderr)
        driver = None
    try:
        def opens() -> str:
            driver.get(start)
            wait_for(lambda: at_idp_login(driver, idp), "IdP sign-in form", driver)
            return f"redirected to the IdP's sign-in form ({idp.issuer}/interaction/...)"

        def signs_in() -> str:
            from selenium.common.exceptions import WebDriverException

            # idp_login takes each IdP page as it shows up, so it can simply be run again when
            # Chromium trips over a page that changed under a look at it ("Node with given id
            # does not belong to the document": a stale element it does not report as such).
            for attempt in range(3):
                try:
                    landed = support.idp_login(driver, CHECK_USER)
                    break
                except WebDriverException:
                    if attempt == 2:
                        raise
                    time.sleep(0.2)
            assert landed == start, f"landed on {landed}, expected {start}"
            return f"signed in as {CHECK_USER!r}, back on {start}"

        def echo_shows_identity() -> str:
            seen = wait_for(lambda: page_echo(driver), "echo of the upstream on the page", driver, timeout=10)
            got = identity(seen)
            want = {"x-user-sub": CHECK_USER, "x-user-email": CHECK_EMAIL, "x-user-name": CHECK_USER}
            assert got == want, f"the upstream saw {got}, expected {want}"
            cookie = seen["headers"].get("cookie", "")
            assert COOKIE not in cookie, "the session cookie reached the upstream"
            return ", ".join(f"{k}={v}" for k, v in got.items()) + "; no session cookie upstream"

        def reload_keeps_session() -> str:
            before = idp.stats().get("auth", 0)
            driver.refresh()
            assert driver.current_url == start, f"at {driver.current_url} after the reload"
            seen = wait_for(lambda: page_echo(driver), "echo of the upstream after the reload", driver, timeout=10)
            sub = identity(seen)["x-user-sub"]
            assert sub == CHECK_USER, f"x-user-sub {sub!r} after the reload"
            trips = idp.stats().get("auth", 0) - before
            assert trips == 0, f"{trips} trip(s) to the IdP on a reload"
            return f"still x-user-sub={CHECK_USER}, no trip to the IdP"

        def logs_out() -> str:
            driver.get(base + LOGOUT)
            wait_for(lambda: driver.current_url.startswith(idp.end_session_endpoint), "IdP sign-out page", driver)
            from selenium.common.exceptions import WebDriverException

            try:
                landed = support.idp_confirm_logout(driver)
            except WebDriverException:  # the same race as in signs_in, after the click
                landed = wait_for(lambda: driver.current_url == base + SIGNED_OUT and driver.current_url,
                                  "landing after the sign-out", driver)
            assert landed == base + SIGNED_OUT, f"landed on {landed}, expected {base + SIGNED_OUT}"
            names = {c["name"] for c in driver.get_cookies()}
            assert COOKIE not in names, "the session cookie survived the logout"
            return f"session cookie cleared, IdP session ended, landed on {SIGNED_OUT}"

        def asks_again() -> str:
            driver.get(start)
            wait_for(lambda: at_idp_login(driver, idp), "IdP sign-in form", driver)
            return "the page sends the browser to the IdP's sign-in form again"

        table.step("browser", "open /", "no session yet", opens)
        table.step("browser", "IdP sign-in", "any name and password (dev form, then consent)", signs_in)
        table.step("browser", "/", "the upstream's echo", echo_shows_identity, breaks=False)
        table.step("browser", "reload /", "the session cookie carries it", reload_keeps_session, breaks=False)
        table.step("browser", LOGOUT, "sign out, confirmed at the IdP", logs_out)
        table.step("browser", "open / again", "after the logout", asks_again, breaks=False)

        def api_after_logout() -> str:
            jar = "; ".join(f"{c['name']}={c['value']}" for c in driver.get_cookies()) if driver else ""
            return api_401(jar)

        table.step("http", "GET / (JSON)", "an API request with the browser's cookies after logout",
                   api_after_logout)
    finally:
        if driver is not None:
            driver.quit()

    reasons = []
    for line in envoy.log_text().splitlines():
        if "portcullis decision" in line and "reason=" in line:
            reason = line.split("reason=", 1)[1].split()[0]
            if reason not in reasons:
                reasons.append(reason)
    print(f"{'HAProxy' if envoy.kind == 'haproxy' else 'Envoy'} logged decisions with reasons: {', '.join(reasons) or '(none)'}")
    if table.failed:
        print(envoy.log_tail(30), file=sys.stderr)
        print(idp.log_tail(30), file=sys.stderr)
    print(f"demo check: {table.passed} passed, {table.failed} failed")
    return 0 if table.failed == 0 else 1
