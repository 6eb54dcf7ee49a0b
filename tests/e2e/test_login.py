"""Browser login (OIDC authorization code + PKCE; issue 14's plugin/test contract) end to end, with real
parts only: a real OpenID provider (oidc-provider on Node.js, tests/e2e/idp), a real headless
Chromium driven by Selenium, and the plugin in a real Envoy. Login is Envoy-only for now.

One IdP serves the whole module. Its client registers, before anything starts, the callback
URLs of both Envoys of this module (so their listen ports are chosen first) and the redirect_uri
of a small capture server, which lets the first test prove the IdP, the browser and PKCE work
with no plugin at all.

- Envoy A seals sessions with key A; Envoy B has keys [B, A]: it seals with B and still opens A.
  So a session from A works at B (rotation), and one from B is foreign to A.
- Browser tests use a fresh Chromium each (a shared one would carry the IdP's session from test
  to test and skip the login page); the others drive the IdP's dev forms with `requests` and
  keep the plugin's cookies in `Cookies`, because the standard jar never sends a Secure cookie
  over http while a browser does on 127.0.0.1.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Iterator

import jwt
import pytest
import requests

from envoy_runner import EnvoyProcess
from oidc_support import (
    CallbackCatcher,
    Cookies,
    OidcProvider,
    free_port,
    idp_confirm_logout,
    idp_login,
    idp_login_http,
    make_browser,
    parse_set_cookie,
    pkce_pair,
    query_of,
    set_cookie_lines,
)

# Every test runs in Envoy and behind HAProxy (the same .wasm in portcullis-spoa).

CLIENT_ID = "portcullis-demo"
CLIENT_SECRET = "demo-secret"
COOKIE = "__Host-portcullis"
CALLBACK = "/oauth2/callback"
LOGOUT = "/oauth2/logout"
SIGNED_OUT = "/public/signed-out"
SESSION_SECONDS = 3600
TOKEN_TIMEOUT_MS = 2000  # short, so the slow-token-endpoint test is quick
REALM = 'Bearer realm="portcullis"'
# What Chromium sends on a navigation (the spec's "Accept lists text/html with the highest q").
HTML = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def cookie_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


KEY_A = cookie_key()
KEY_B = cookie_key()


# --- the module's parts ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ports() -> dict[str, int]:
    """Envoy listen ports, chosen before the IdP starts (its client registers the callbacks)."""
    return {"a": free_port(), "b": free_port()}


@pytest.fixture(scope="module")
def catcher() -> Iterator[CallbackCatcher]:
    server = CallbackCatcher("/cb")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def idp(ports: dict[str, int], catcher: CallbackCatcher, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[OidcProvider]:
    origins = [f"http://127.0.0.1:{port}" for port in ports.values()]
    provider = OidcProvider(
        tmp_path_factory.mktemp("idp"),
        redirect_uris=[catcher.url] + [origin + CALLBACK for origin in origins],
        post_logout_redirect_uris=[origin + SIGNED_OUT for origin in origins],
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, auth_method="client_secret_basic",
    ).start()
    yield provider
    provider.stop()


@pytest.fixture(autouse=True)
def _idp_log_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """Show the IdP's log when a test fails (conftest attaches the Envoy logs; the IdP is no
    Envoy, and a test module cannot add to the report), and leave the token endpoint working
    for the next test whatever this one made it do."""
    failed_before = request.session.testsfailed
    yield
    if "idp" not in request.fixturenames:
        return
    provider: OidcProvider = request.getfixturevalue("idp")
    if request.session.testsfailed > failed_before:
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("")
            reporter.write_sep("-", f"IdP log of {request.node.nodeid}")
            reporter.write_line(provider.log_tail())
    if provider.running():
        provider.token_behaviour("normal")


def login_config(idp: OidcProvider, cookie_keys: list[str]) -> dict[str, Any]:
    """The spec's example policy, pointed at this module's IdP."""
    return {
        "mode": "enforce",
        "realm": "portcullis",
        "providers": {
            "idp": {
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
                    "timeout_ms": TOKEN_TIMEOUT_MS,
                    "callback_path": CALLBACK,
                    "logout_path": LOGOUT,
                    "post_logout_path": SIGNED_OUT,
                    "cookie_name": COOKIE,
                    "cookie_secure": True,
                    "session_seconds": SESSION_SECONDS,
                    "cookie_keys": cookie_keys,
                },
            }
        },
        "rules": [
            {"name": "public", "match": {"path": {"prefix": "/public"}}, "auth": "none"},
            {"name": "app", "match": {"path": {"prefix": "/"}}, "auth": "login"},
        ],
        "claim_headers": [
            {"claim": "sub", "header": "x-user-sub"},
            {"claim": "email", "header": "x-user-email"},
        ],
    }


@pytest.fixture(scope="module")
def envoy_a(start_envoy, idp: OidcProvider, ports: dict[str, int]) -> EnvoyProcess:
    return start_envoy(login_config(idp, [KEY_A]), listen_port=ports["a"], idp_port=idp.port)


@pytest.fixture(scope="module")
def envoy_b(start_envoy, idp: OidcProvider, ports: dict[str, int]) -> EnvoyProcess:
    return start_envoy(login_config(idp, [KEY_B, KEY_A]), listen_port=ports["b"], idp_port=idp.port)


@pytest.fixture
def browser() -> Iterator[Any]:
    driver = make_browser()
    yield driver
    driver.quit()


# --- HTTP helpers --------------------------------------------------------------------------------
def get(envoy: EnvoyProcess, path: str, cookies: Cookies | None = None, method: str = "GET",
        **headers: str | None) -> requests.Response:
    """One request to the plugin, redirects not followed, cookies sent by hand (a header given
    as None is not sent at all, not even requests' default)."""
    sent = {k.replace("_", "-"): v for k, v in headers.items()}
    if cookies is not None and cookies.values:
        sent["Cookie"] = cookies.header()
    sent.setdefault("Connection", "close")
    return requests.request(method, envoy.url(path), headers=sent, allow_redirects=False, timeout=15)


def navigate(envoy: EnvoyProcess, path: str, cookies: Cookies | None = None, **headers: str
             ) -> requests.Response:
    """A request shaped like a browser's top-level navigation, without Sec-Fetch headers."""
    headers.setdefault("Accept", HTML)
    return get(envoy, path, cookies, **headers)


def session_cookie_names(names: list[str]) -> list[str]:
    """The session cookie and its continuation parts, not the flow cookies."""
    return [n for n in names if n == COOKIE or (n.startswith(COOKIE + "-") and n[len(COOKIE) + 1:].isdigit())]


def flow_cookie_names(names: list[str]) -> list[str]:
    return [n for n in names if n.startswith(COOKIE + "-flow-")]


def upstream_seen(resp: requests.Response) -> dict[str, Any]:
    body = resp.json()
    assert "raw_headers" in body, f"did not reach the upstream: {resp.status_code} {resp.text[:300]}"
    return body


def seen_header(body: dict[str, Any], name: str) -> list[str]:
    return [v for n, v in body["raw_headers"] if n == name]


@dataclass
class Flow:
    """A login the plugin started: its redirect to the IdP and the flow cookie it set."""

    location: str
    params: dict[str, str]
    cookies: Cookies

    @property
    def state(self) -> str:
        return self.params["state"]


def start_flow(envoy: EnvoyProcess, idp: OidcProvider, path: str = "/app/page",
               cookies: Cookies | None = None) -> Flow:
    resp = navigate(envoy, path, cookies)
    assert resp.status_code == 302, f"{resp.status_code} {resp.text[:300]}"
    location = resp.headers["location"]
    assert location.startswith(idp.authorization_endpoint + "?"), location
    jar = (cookies or Cookies()).copy().update(resp)
    return Flow(location, query_of(location), jar)


def finish_flow(envoy: EnvoyProcess, flow: Flow, username: str, auth_url: str | None = None,
                http: requests.Session | None = None) -> tuple[str, requests.Response]:
    """Log in at the IdP (its dev forms over HTTP) and hand the code to the plugin's callback
    with the flow cookie, as the browser would. Returns (callback URL, the plugin's answer)."""
    callback = idp_login_http(auth_url or flow.location, username, stop_at=envoy.url(CALLBACK),
                              session=http)
    return callback, get_url(envoy, callback, flow.cookies)


def get_url(envoy: EnvoyProcess, url: str, cookies: Cookies | None = None) -> requests.Response:
    """GET an absolute URL of this Envoy, as a browser navigation."""
    parts = urllib.parse.urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == envoy.url(""), url
    return navigate(envoy, parts.path + ("?" + parts.query if parts.query else ""), cookies)


def login(envoy: EnvoyProcess, idp: OidcProvider, username: str = "alice", path: str = "/app/page"
          ) -> Cookies:
    """A full login with `requests`; returns the cookies a browser would then hold."""
    flow = start_flow(envoy, idp, path)
    _, resp = finish_flow(envoy, flow, username)
    assert resp.status_code == 302, f"callback answered {resp.status_code}: {resp.text[:300]}"
    jar = flow.cookies.copy().update(resp)
    assert session_cookie_names(jar.names()), f"no session cookie set: {set_cookie_lines(resp)}"
    assert not flow_cookie_names(jar.names()), f"flow cookie not deleted: {set_cookie_lines(resp)}"
    return jar


def assert_no_session_set(resp: requests.Response) -> None:
    """No Set-Cookie that would create a session (deleting cookies is fine)."""
    for line in set_cookie_lines(resp):
        name, value, attrs = parse_set_cookie(line)
        if session_cookie_names([name]):
            assert value == "" or is_deletion(line), f"a failed callback set a session: {line}"


def is_deletion(line: str) -> bool:
    """A Set-Cookie that removes its cookie (Max-Age=0, or an Expires in the past)."""
    _, _, attrs = parse_set_cookie(line)
    if attrs.get("max-age") == "0":
        return True
    expires = attrs.get("expires")
    if expires:
        from email.utils import parsedate_to_datetime

        return parsedate_to_datetime(expires).timestamp() < time.time()
    return False


def assert_login_redirect(resp: requests.Response, idp: OidcProvider) -> None:
    assert resp.status_code == 302, f"{resp.status_code} {resp.text[:300]}"
    assert resp.headers["location"].startswith(idp.authorization_endpoint + "?"), resp.headers["location"]


def assert_api_401(resp: requests.Response) -> None:
    assert resp.status_code == 401, f"{resp.status_code} {resp.headers.get('location')} {resp.text[:300]}"
    assert resp.headers.get("www-authenticate", "").startswith(REALM), resp.headers
    assert "location" not in resp.headers
    assert "raw_headers" not in resp.text, "a denied request reached the upstream"


# --- browser helpers -----------------------------------------------------------------------------
def page_json(driver: Any) -> dict[str, Any]:
    """The echo upstream's JSON as Chromium shows it (in a <pre>, beside its pretty-print box)."""
    from selenium.webdriver.common.by import By

    pre = driver.find_elements(By.TAG_NAME, "pre")
    text = pre[0].text if pre else driver.execute_script("return document.body.innerText")
    return dict(json.loads(text))


def network_events(driver: Any) -> list[dict[str, Any]]:
    """Chrome's performance log since the last read (it drains)."""
    return [json.loads(e["message"])["message"] for e in driver.get_log("performance")]


def wait_for(predicate: Any, timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def at_idp_login_page(driver: Any, idp: OidcProvider) -> bool:
    from selenium.webdriver.common.by import By

    return driver.current_url.startswith(idp.url("/interaction/")) and bool(
        driver.find_elements(By.CSS_SELECTOR, 'input[name="prompt"][value="login"]'))


# ================================================================================================
# 1. The infrastructure alone: IdP + browser + PKCE, no plugin.
# ================================================================================================
def test_idp_code_flow_with_pkce_and_a_real_browser(idp: OidcProvider, catcher: CallbackCatcher,
                                                     browser: Any) -> None:
    verifier, challenge = pkce_pair()
    state, nonce = "st-" + os.urandom(8).hex(), "nn-" + os.urandom(8).hex()
    auth_url = idp.authorization_endpoint + "?" + urllib.parse.urlencode({
        "response_type": "code", "client_id": CLIENT_ID, "redirect_uri": catcher.url,
        "scope": "openid email profile", "state": state, "nonce": nonce,
        "code_challenge": challenge, "code_challenge_method": "S256",
    })
    browser.get(auth_url)
    wait_for(lambda: at_idp_login_page(browser, idp), what="the IdP's login page")
    landed = idp_login(browser, "alice")
    assert landed.startswith(catcher.url + "?"), landed
    got = query_of(catcher.hits[-1])
    assert got["state"] == state
    assert got["iss"] == idp.issuer  # RFC 9207, which oidc-provider sends
    code = got["code"]

    # Without the verifier the IdP refuses the code: PKCE is really enforced.
    no_pkce = requests.post(idp.token_endpoint, auth=(CLIENT_ID, CLIENT_SECRET), timeout=10, data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": catcher.url})
    assert no_pkce.status_code == 400, no_pkce.text
    assert no_pkce.json()["error"] == "invalid_grant"

    # A second, fresh login (the IdP now has a session: no login page) and a proper redemption.
    browser.get(auth_url.replace(state, state + "2"))
    assert idp_login(browser, "alice").startswith(catcher.url + "?")
    code = query_of(catcher.hits[-1])["code"]
    resp = requests.post(idp.token_endpoint, auth=(CLIENT_ID, CLIENT_SECRET), timeout=10, data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": catcher.url,
        "code_verifier": verifier})
    assert resp.status_code == 200, resp.text
    id_token = resp.json()["id_token"]
    assert jwt.get_unverified_header(id_token)["alg"] == "RS256"
    signing_key = jwt.PyJWKClient(idp.jwks_uri).get_signing_key_from_jwt(id_token)
    claims = jwt.decode(id_token, signing_key.key, algorithms=["RS256"], audience=CLIENT_ID, issuer=idp.issuer)
    assert claims["nonce"] == nonce
    assert claims["sub"] == "alice"
    assert claims["email"] == "alice@example.test"
    assert claims["name"] == "alice"

    # The code is single-use.
    again = requests.post(idp.token_endpoint, auth=(CLIENT_ID, CLIENT_SECRET), timeout=10, data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": catcher.url,
        "code_verifier": verifier})
    assert again.status_code == 400


# ================================================================================================
# 2. The plugin in a browser.
# ================================================================================================
def test_browser_login_reload_replay_and_logout(envoy_a: EnvoyProcess, idp: OidcProvider, browser: Any) -> None:
    start = envoy_a.url("/app/page?tab=1")
    browser.get(start)
    wait_for(lambda: at_idp_login_page(browser, idp), what="the IdP's login page")
    landed = idp_login(browser, "alice")
    assert landed == start

    seen = page_json(browser)
    assert seen.get("path") == "/app/page?tab=1", seen
    assert seen["headers"].get("x-user-sub") == "alice"
    assert seen["headers"].get("x-user-email") == "alice@example.test"
    assert COOKIE not in seen["headers"].get("cookie", ""), seen["headers"]["cookie"]

    cookies = {c["name"]: c for c in browser.get_cookies()}
    assert COOKIE in cookies, sorted(cookies)
    assert cookies[COOKIE]["httpOnly"] and cookies[COOKIE]["secure"]
    assert cookies[COOKIE]["sameSite"] == "Lax" and cookies[COOKIE]["path"] == "/"
    assert not flow_cookie_names(list(cookies)), "the flow cookie outlived the login"

    events = network_events(browser)
    callbacks = [e["params"]["request"]["url"] for e in events if e.get("method") == "Network.requestWillBeSent"
                 and e["params"]["request"]["url"].startswith(envoy_a.url(CALLBACK) + "?")]
    assert len(callbacks) == 1, callbacks

    # Reload: the session carries it, no trip to the IdP.
    auth_before = idp.stats()["auth"]
    browser.refresh()
    assert browser.current_url == start
    assert page_json(browser)["headers"].get("x-user-sub") == "alice"
    assert idp.stats()["auth"] == auth_before

    # Replaying the callback URL: its flow cookie is gone, so it must be refused (400).
    network_events(browser)  # drain
    browser.get(callbacks[0])
    statuses = [e["params"]["response"]["status"] for e in network_events(browser)
                if e.get("method") == "Network.responseReceived"
                and e["params"]["response"]["url"] == callbacks[0]]
    assert statuses == [400], statuses
    assert browser.current_url == callbacks[0]

    # Logout: the plugin clears the session and sends the browser to the IdP's end-session page.
    network_events(browser)  # drain
    browser.get(envoy_a.url(LOGOUT))
    wait_for(lambda: browser.current_url.startswith(idp.end_session_endpoint), what="the IdP's end-session page")
    end_session = [e["params"]["request"]["url"] for e in network_events(browser)
                   if e.get("method") == "Network.requestWillBeSent"
                   and e["params"]["request"]["url"].startswith(idp.end_session_endpoint + "?")]
    assert end_session, "the logout did not go to the IdP's end_session_endpoint"
    params = query_of(end_session[0])
    assert params["client_id"] == CLIENT_ID
    assert params["post_logout_redirect_uri"] == envoy_a.url(SIGNED_OUT)
    assert params.get("id_token_hint", "").count(".") == 2
    assert COOKIE not in {c["name"] for c in browser.get_cookies()}, "the session cookie survived the logout"
    after = idp_confirm_logout(browser)
    assert after == envoy_a.url(SIGNED_OUT)
    assert COOKIE not in page_json(browser)["headers"].get("cookie", "")

    # The protected page asks for a login again (the IdP session is gone too: its login form).
    browser.get(start)
    wait_for(lambda: at_idp_login_page(browser, idp), what="the IdP's login page after logout")


def test_two_tabs_log_in_concurrently(envoy_a: EnvoyProcess, idp: OidcProvider, browser: Any) -> None:
    first, second = envoy_a.url("/app/one?x=1"), envoy_a.url("/app/two?y=2")
    browser.get(first)
    wait_for(lambda: at_idp_login_page(browser, idp), what="tab 1 at the IdP")
    tab1 = browser.current_window_handle
    browser.switch_to.new_window("tab")
    tab2 = browser.current_window_handle
    browser.get(second)
    wait_for(lambda: at_idp_login_page(browser, idp), what="tab 2 at the IdP")
    flows = flow_cookie_names([c["name"] for c in browser.get_cookies()])
    assert len(flows) == 2, f"one flow cookie per login expected: {flows}"

    assert idp_login(browser, "alice") == second  # tab 2 finishes first
    assert page_json(browser)["headers"].get("x-user-sub") == "alice"
    browser.switch_to.window(tab1)
    assert at_idp_login_page(browser, idp)
    assert idp_login(browser, "alice") == first
    seen = page_json(browser)
    assert seen["path"] == "/app/one?x=1"
    assert seen["headers"].get("x-user-sub") == "alice"
    assert not flow_cookie_names([c["name"] for c in browser.get_cookies()])
    browser.switch_to.window(tab2)
    browser.refresh()
    assert page_json(browser)["path"] == "/app/two?y=2"


# ================================================================================================
# 3. Who gets a redirect, who gets a 401.
# ================================================================================================
@pytest.mark.parametrize("method,headers,redirect", [
    ("GET", {"Accept": HTML}, True),
    ("HEAD", {"Accept": HTML}, True),
    ("GET", {"Accept": "*/*", "Sec-Fetch-Mode": "navigate"}, True),
    ("GET", {"Accept": "application/json"}, False),
    ("GET", {"Accept": None}, False),
    ("GET", {"Accept": "*/*"}, False),
    ("GET", {"Accept": "application/json, text/html;q=0.5"}, False),
    ("GET", {"Accept": HTML, "X-Requested-With": "XMLHttpRequest"}, False),
    ("GET", {"Accept": HTML, "Sec-Fetch-Mode": "cors"}, False),
    ("GET", {"Accept": HTML, "Authorization": "Bearer not.a.token"}, False),
    ("POST", {"Accept": HTML}, False),
], ids=["html", "head-html", "sec-fetch-navigate", "json", "no-accept", "star", "json-over-html",
        "xhr", "sec-fetch-cors", "bearer", "post-html"])
def test_who_is_redirected(envoy_a: EnvoyProcess, idp: OidcProvider, method: str,
                           headers: dict[str, str | None], redirect: bool) -> None:
    """`Accept: None` removes requests' default `Accept: */*`: no Accept header at all."""
    resp = get(envoy_a, "/app/page?q=1", method=method, **headers)
    if redirect:
        assert_login_redirect(resp, idp)
    else:
        assert_api_401(resp)
        if method == "GET" and "Authorization" not in headers:
            assert resp.json(), "the 401 carries a JSON body"


def test_the_redirect_to_the_idp(envoy_a: EnvoyProcess, idp: OidcProvider) -> None:
    resp = navigate(envoy_a, "/app/page?q=1")
    assert_login_redirect(resp, idp)
    params = query_of(resp.headers["location"])
    assert params["response_type"] == "code"
    assert params["client_id"] == CLIENT_ID
    assert params["redirect_uri"] == envoy_a.url(CALLBACK)
    assert set(params["scope"].split()) == {"openid", "email", "profile"}
    assert params["code_challenge_method"] == "S256"
    assert len(params["code_challenge"]) == 43  # base64url of a SHA-256
    assert len(params["state"]) >= 16 and len(params["nonce"]) >= 16
    assert "no-store" in resp.headers.get("cache-control", "")

    lines = [line for line in set_cookie_lines(resp) if line.startswith(COOKIE + "-flow-")]
    assert len(lines) == 1, set_cookie_lines(resp)
    name = lines[0].split("=", 1)[0]
    assert name == f"{COOKIE}-flow-{params['state'][:16]}"
    attrs = [a.strip().lower() for a in lines[0].split(";")[1:]]
    for want in ("max-age=600", "path=/", "httponly", "secure", "samesite=lax"):
        assert want in attrs, lines[0]

    other = query_of(navigate(envoy_a, "/app/page?q=1").headers["location"])
    assert other["state"] != params["state"] and other["nonce"] != params["nonce"]
    assert other["code_challenge"] != params["code_challenge"]


def test_public_path_needs_no_login(envoy_a: EnvoyProcess) -> None:
    resp = navigate(envoy_a, "/public/x")
    assert resp.status_code == 200
    assert upstream_seen(resp)["path"] == "/public/x"


# ================================================================================================
# 4. A login with requests, and what the session does.
# ================================================================================================
def test_login_sets_a_session_and_the_upstream_sees_claims_not_cookies(envoy_a: EnvoyProcess,
                                                                      idp: OidcProvider) -> None:
    flow = start_flow(envoy_a, idp, "/app/deep/page?a=1&b=two")
    callback, resp = finish_flow(envoy_a, flow, "bob")
    assert resp.status_code == 302, resp.text[:300]
    back = resp.headers["location"]
    assert urllib.parse.urljoin(envoy_a.url("/"), back) == envoy_a.url("/app/deep/page?a=1&b=two")

    session_lines = [line for line in set_cookie_lines(resp) if session_cookie_names([line.split("=", 1)[0]])]
    # Pieces a smaller session does not use are deleted, so a shrunk session leaves none behind.
    session_lines = [line for line in session_lines if not is_deletion(line)]
    assert session_lines, set_cookie_lines(resp)
    for line in session_lines:
        attrs = [a.strip().lower() for a in line.split(";")[1:]]
        for want in ("path=/", "httponly", "secure", "samesite=lax", f"max-age={SESSION_SECONDS}"):
            assert want in attrs, line
    flow_deleted = [line for line in set_cookie_lines(resp) if line.startswith(f"{COOKIE}-flow-{flow.state[:16]}=")]
    assert flow_deleted and is_deletion(flow_deleted[0]), set_cookie_lines(resp)

    jar = flow.cookies.copy().update(resp)
    jar.values["theme"] = "dark"  # a cookie of the application itself
    answer = get(envoy_a, "/app/deep/page?a=1&b=two", jar, Accept="application/json",
                 **{"x-user-sub": "mallory", "x-user-email": "mallory@evil.example"})
    assert answer.status_code == 200, answer.text[:300]
    seen = upstream_seen(answer)
    assert seen_header(seen, "x-user-sub") == ["bob"]
    assert seen_header(seen, "x-user-email") == ["bob@example.test"]
    cookie = seen["headers"].get("cookie", "")
    assert "theme=dark" in cookie
    assert COOKIE not in cookie, cookie

    # A bearer token, when present, wins over the cookie (and this one is junk).
    assert_api_401(get(envoy_a, "/app/x", jar, Accept="application/json", Authorization="Bearer junk"))

    for reason in ("login_redirect", "login_ok", "session_valid"):
        assert envoy_a.wait_for_log(f"reason={reason}"), f"no decision line with reason={reason}"
    log = envoy_a.log_text()
    assert query_of(callback)["code"] not in log, "the authorization code was logged"
    for name in session_cookie_names(jar.names()):
        assert jar.values[name] not in log, "a session cookie value was logged"
    assert flow.cookies.values[flow_cookie_names(flow.cookies.names())[0]] not in log, "the flow cookie was logged"


def test_tampered_and_truncated_session_cookies_are_no_session(envoy_a: EnvoyProcess, idp: OidcProvider) -> None:
    jar = login(envoy_a, idp, "carol")
    assert get(envoy_a, "/app/x", jar, Accept="application/json").status_code == 200
    value = jar.values[COOKIE]
    i = len(value) // 2
    flipped = value[:i] + ("A" if value[i] != "A" else "B") + value[i + 1:]
    for bad in (flipped, value[: len(value) // 2], value + "x", ""):
        forged = jar.copy()
        forged.values[COOKIE] = bad
        assert_login_redirect(navigate(envoy_a, "/app/x", forged), idp)
        assert_api_401(get(envoy_a, "/app/x", forged, Accept="application/json"))


def test_a_session_sealed_with_a_foreign_key_is_refused(envoy_a: EnvoyProcess, envoy_b: EnvoyProcess,
                                                        idp: OidcProvider) -> None:
    from_b = login(envoy_b, idp, "dave")  # sealed with B, which A does not have
    assert get(envoy_b, "/app/x", from_b, Accept="application/json").status_code == 200
    assert_login_redirect(navigate(envoy_a, "/app/x", from_b), idp)
    assert_api_401(get(envoy_a, "/app/x", from_b, Accept="application/json"))


def test_key_rotation_keeps_sessions_sealed_with_the_older_key(envoy_a: EnvoyProcess, envoy_b: EnvoyProcess,
                                                               idp: OidcProvider) -> None:
    from_a = login(envoy_a, idp, "erin")  # sealed with A; B has [B, A]
    answer = get(envoy_b, "/app/x", from_a, Accept="application/json")
    assert answer.status_code == 200, answer.text[:300]
    assert seen_header(upstream_seen(answer), "x-user-sub") == ["erin"]


# ================================================================================================
# 5. The callback's failures.
# ================================================================================================
def test_callback_with_forged_or_missing_state_is_400(envoy_a: EnvoyProcess, idp: OidcProvider) -> None:
    for query in ("?code=x&state=forged", "?code=x", "", "?state=forged"):
        resp = navigate(envoy_a, CALLBACK + query)
        assert resp.status_code == 400, (query, resp.status_code, resp.text[:200])
        assert "text/html" in resp.headers.get("content-type", ""), resp.headers
        assert "raw_headers" not in resp.text
        assert_no_session_set(resp)

    # A real state, but without its flow cookie, or with the flow cookie altered.
    flow = start_flow(envoy_a, idp)
    resp = navigate(envoy_a, f"{CALLBACK}?code=x&state={urllib.parse.quote(flow.state)}")
    assert resp.status_code == 400
    (name,) = flow_cookie_names(flow.cookies.names())
    tampered = flow.cookies.copy()
    v = tampered.values[name]
    tampered.values[name] = v[:-2] + ("AA" if v[-2:] != "AA" else "BB")
    resp = navigate(envoy_a, f"{CALLBACK}?code=x&state={urllib.parse.quote(flow.state)}", tampered)
    assert resp.status_code == 400
    assert_no_session_set(resp)


def test_replayed_callback_is_refused(envoy_a: EnvoyProcess, idp: OidcProvider) -> None:
    flow = start_flow(envoy_a, idp)
    callback, resp = finish_flow(envoy_a, flow, "frank")
    assert resp.status_code == 302
    after = flow.cookies.copy().update(resp)  # the browser's cookies now: session, no flow cookie
    replay = get_url(envoy_a, callback, after)
    assert replay.status_code == 400, replay.text[:300]
    assert_no_session_set(replay)
    # Even an attacker who kept the old flow cookie gets no new session: the code is spent.
    stale = get_url(envoy_a, callback, flow.cookies)
    assert stale.status_code >= 400, stale.status_code
    assert_no_session_set(stale)


def test_idp_error_is_403(envoy_a: EnvoyProcess, idp: OidcProvider) -> None:
    flow = start_flow(envoy_a, idp)
    callback = idp_login_http(flow.location, "grace", stop_at=envoy_a.url(CALLBACK), abort=True)
    assert query_of(callback)["error"] == "access_denied"
    resp = get_url(envoy_a, callback, flow.cookies)
    assert resp.status_code == 403, resp.text[:300]
    assert "access_denied" in resp.text
    assert_no_session_set(resp)


def test_id_token_with_the_wrong_nonce_is_401(envoy_a: EnvoyProcess, idp: OidcProvider) -> None:
    flow = start_flow(envoy_a, idp)
    # The same authorization request (state, PKCE challenge, redirect_uri), another nonce: the
    # IdP's id_token then carries a nonce this flow never made.
    params = dict(flow.params, nonce="not-the-plugins-nonce-" + os.urandom(6).hex())
    auth_url = idp.authorization_endpoint + "?" + urllib.parse.urlencode(params)
    callback, resp = finish_flow(envoy_a, flow, "heidi", auth_url=auth_url)
    assert resp.status_code == 401, resp.text[:300]
    assert "text/html" in resp.headers.get("content-type", "")
    assert_no_session_set(resp)
    assert envoy_a.wait_for_log("reason=login_failed"), "no decision line with reason=login_failed"


@pytest.mark.parametrize("mode,params,status", [
    ("status", {"code": 500}, 502),
    ("junk", {}, 502),
    ("delay", {"ms": TOKEN_TIMEOUT_MS + 1500}, 503),
    ("drop", {}, 503),
], ids=["idp-500", "idp-junk", "idp-slow", "idp-drops"])
def test_token_endpoint_failures(envoy_a: EnvoyProcess, idp: OidcProvider, mode: str, params: dict[str, int],
                                 status: int) -> None:
    flow = start_flow(envoy_a, idp)
    callback = idp_login_http(flow.location, "ivan", stop_at=envoy_a.url(CALLBACK))
    idp.token_behaviour(mode, **params)
    began = time.monotonic()
    resp = get_url(envoy_a, callback, flow.cookies)
    took = time.monotonic() - began
    assert resp.status_code == status, (resp.status_code, resp.text[:300])
    assert "text/html" in resp.headers.get("content-type", "")
    assert_no_session_set(resp)
    if status == 503:
        assert resp.headers.get("retry-after"), resp.headers
    if mode == "delay":
        assert took < TOKEN_TIMEOUT_MS / 1000 + 1.0, f"the plugin waited {took:.1f}s, past its timeout"


def test_token_endpoint_down_is_503(envoy_a: EnvoyProcess, idp: OidcProvider) -> None:
    flow = start_flow(envoy_a, idp)
    callback = idp_login_http(flow.location, "judy", stop_at=envoy_a.url(CALLBACK))
    idp.stop()
    try:
        resp = get_url(envoy_a, callback, flow.cookies)
        assert resp.status_code == 503, (resp.status_code, resp.text[:300])
        assert resp.headers.get("retry-after"), resp.headers
        assert_no_session_set(resp)
    finally:
        idp.start()  # same port, same signing key
    # Back up: a new login works again.
    assert session_cookie_names(login(envoy_a, idp, "judy").names())


# ================================================================================================
# 6. No open redirect.
# ================================================================================================
def raw_get(envoy: EnvoyProcess, target: str) -> http.client.HTTPResponse:
    """A navigation with exactly this request-target (requests would normalise some of them)."""
    conn = http.client.HTTPConnection("127.0.0.1", envoy.listen_port, timeout=15)
    conn.request("GET", target, headers={"Accept": HTML, "Connection": "close"})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


def browser_resolves(base: str, location: str) -> urllib.parse.SplitResult:
    """Where a browser goes for this Location, by the URL standard's rules for http(s), which
    urljoin alone does not follow: tabs and newlines are dropped, a backslash is a slash, and
    any run of two or more slashes at the start makes it scheme-relative (`/\\/evil` is evil)."""
    cleaned = location.strip(" \x00\x1f").replace("\t", "").replace("\n", "").replace("\r", "").replace("\\", "/")
    scheme = urllib.parse.urlsplit(base).scheme
    rest = cleaned
    if rest.lower().startswith(scheme + ":"):
        rest = rest[len(scheme) + 1:]
    if rest.startswith("//"):
        authority_and_more = rest.lstrip("/")
        netloc = re.split(r"[/?#]", authority_and_more, maxsplit=1)[0]
        return urllib.parse.urlsplit(f"{scheme}://{netloc}{authority_and_more[len(netloc):] or '/'}")
    return urllib.parse.urlsplit(urllib.parse.urljoin(base, cleaned))


@pytest.mark.parametrize("target", ["//evil.example/x", "/\\evil.example/x", "/%2F%2Fevil.example/x",
                                    "/%5Cevil.example/x", "/\\/evil.example/x"],
                         ids=["double-slash", "backslash", "encoded-slashes", "encoded-backslash", "mixed"])
def test_no_open_redirect_after_login(envoy_a: EnvoyProcess, idp: OidcProvider, target: str) -> None:
    origin = urllib.parse.urlsplit(envoy_a.url("/"))
    first = raw_get(envoy_a, target)
    location = first.getheader("location") or ""
    assert "evil.example" not in browser_resolves(envoy_a.url("/"), location).netloc, location
    if first.status == 400:
        return  # refused outright as ambiguous: fine
    assert first.status == 302, first.status
    assert location.startswith(idp.authorization_endpoint + "?"), location
    jar = Cookies()
    for line in first.headers.get_all("set-cookie") or []:
        name, _, rest = line.partition("=")
        if "max-age=0" not in line.lower():
            jar.values[name.strip()] = rest.split(";")[0]
    callback = idp_login_http(location, "ken", stop_at=envoy_a.url(CALLBACK))
    resp = get_url(envoy_a, callback, jar)
    assert resp.status_code == 302, resp.text[:300]
    back = browser_resolves(envoy_a.url("/"), resp.headers["location"])
    assert (back.scheme, back.netloc) == (origin.scheme, origin.netloc), resp.headers["location"]


def test_no_open_redirect_in_a_browser(envoy_a: EnvoyProcess, idp: OidcProvider, browser: Any) -> None:
    """The same in Chromium, which reads `/\\` as `//`: wherever the plugin sends it, it must end
    on this origin (or on the plugin's own 400 page), never on evil.example."""
    origin = urllib.parse.urlsplit(envoy_a.url("/")).netloc
    browser.get(envoy_a.url("//evil.example/x"))
    if at_idp_login_page(browser, idp) or browser.current_url.startswith(idp.issuer):
        idp_login(browser, "mallory")
    assert urllib.parse.urlsplit(browser.current_url).netloc == origin, browser.current_url
