"""Real parts for the browser-login tests: an OpenID provider (panva's oidc-provider on Node.js,
tests/e2e/idp/idp.mjs), a headless Chromium driven by Selenium, and the few HTTP helpers needed
to walk the same flow without a browser.

- `OidcProvider`: starts idp.mjs on a free port (or a given one), waits for its `ready` line,
  knows its issuer and endpoints, can be stopped and started again on the same port with the
  same signing key, and can make its token endpoint slow, failing or unreachable on demand.
- `make_browser()`: Debian's chromium through Debian's chromedriver, headless, in a fresh
  profile that is removed on `quit()`.
- `idp_login(driver, name)`: signs in on oidc-provider's development login and consent pages.
- `idp_login_http(auth_url, name, stop_at)`: the same with `requests`, for tests that need to
  hold the code or change the request on the way.
- `Cookies`: a cookie store for `requests` calls to the plugin, because the standard cookie jar
  never sends a `Secure` cookie over http, and the plugin's cookies are `Secure`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from e2e_support import REPO, free_port

__all__ = ["OidcProvider", "IdpError", "free_port", "make_browser", "requested_urls", "idp_login",
           "idp_confirm_logout", "idp_login_http", "pkce_pair", "query_of", "Cookies", "set_cookie_lines",
           "parse_set_cookie", "CallbackCatcher"]

IDP_DIR = REPO / "tests" / "e2e" / "idp"


class IdpError(RuntimeError):
    """The provider did not start or stop as expected; the message carries its log."""


class OidcProvider:
    """One oidc-provider process with one confidential client.

    Its issuer is `http://127.0.0.1:<port>`; the endpoints are oidc-provider's defaults, which
    are the ones the login spec uses. Everything it prints goes to `log_path`, so a failing
    test can show it (`log_tail()`)."""

    def __init__(self, workdir: str | os.PathLike[str], redirect_uris: list[str],
                 post_logout_redirect_uris: list[str] | None = None, client_id: str = "portcullis-demo",
                 client_secret: str = "demo-secret", auth_method: str = "client_secret_basic",
                 port: int = 0) -> None:
        self.workdir = Path(workdir)
        self.redirect_uris = list(redirect_uris)
        self.post_logout_redirect_uris = list(post_logout_redirect_uris or [])
        self.client_id = client_id
        self.client_secret = client_secret
        self.auth_method = auth_method
        self.port = port
        # Kept across restarts: a proxy that cached the JWKS must still verify new tokens.
        self.key_file = self.workdir / "idp-signing-key.json"
        self.log_path = self.workdir / "idp.log"
        self.proc: subprocess.Popen[bytes] | None = None

    # --- lifecycle -------------------------------------------------------------------------
    def command(self) -> list[str]:
        node = shutil.which("node")
        if node is None:
            raise IdpError("node not found: run scripts/setup (the e2e IdP runs on Node.js)")
        cmd = [node, str(IDP_DIR / "idp.mjs"), "--port", str(self.port),
               "--client-id", self.client_id, "--client-secret", self.client_secret,
               "--auth-method", self.auth_method, "--key-file", str(self.key_file)]
        for uri in self.redirect_uris:
            cmd += ["--redirect-uri", uri]
        for uri in self.post_logout_redirect_uris:
            cmd += ["--post-logout-redirect-uri", uri]
        return cmd

    def start(self, timeout: float = 20.0) -> "OidcProvider":
        """Start it and wait for `ready <port>`. Port 0 means any free port; after that the
        same port is reused, so `stop()` then `start()` keeps the issuer."""
        if not (IDP_DIR / "node_modules" / "oidc-provider").is_dir():
            raise IdpError(f"{IDP_DIR}/node_modules is missing: run scripts/setup (npm ci)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        offset = len(self.log_text())  # a restart appends: read only this process's lines
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), cwd=IDP_DIR, stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise IdpError(f"the IdP exited with status {self.proc.returncode}\n{self.log_tail()}")
            for line in self.log_text()[offset:].splitlines():
                if line.startswith("ready "):
                    port = int(line.split()[1])
                    if self.port in (0, port):
                        self.port = port
                        return self
            time.sleep(0.05)
        self.stop()
        raise IdpError(f"the IdP was not ready within {timeout:.0f}s\n{self.log_tail()}")

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (it closes its listener and exits), SIGKILL if it lingers. The log is kept,
        and the next start appends to it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> "OidcProvider":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- where it is -----------------------------------------------------------------------
    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.issuer + path

    @property
    def authorization_endpoint(self) -> str:
        return self.url("/auth")

    @property
    def token_endpoint(self) -> str:
        return self.url("/token")

    @property
    def jwks_uri(self) -> str:
        return self.url("/jwks")

    @property
    def end_session_endpoint(self) -> str:
        return self.url("/session/end")

    # --- test controls (idp.mjs's /__test routes) ------------------------------------------
    def token_behaviour(self, mode: str = "normal", **params: Any) -> None:
        """normal; delay (ms=...); status (code=...); junk (200, not JSON); drop (no answer)."""
        resp = requests.get(self.url("/__test/token"), params={"mode": mode, **params}, timeout=5)
        resp.raise_for_status()

    def stats(self) -> dict[str, int]:
        """How often each endpoint was hit since this process started."""
        resp = requests.get(self.url("/__test/stats"), timeout=5)
        resp.raise_for_status()
        return dict(resp.json())

    # --- logs ------------------------------------------------------------------------------
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        tail = self.log_text().splitlines()[-lines:]
        return f"--- last {len(tail)} lines of {self.log_path} ---\n" + "\n".join(tail)


# --- PKCE and authorization requests ---------------------------------------------------------
def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge), as RFC 7636 defines them."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def query_of(url: str) -> dict[str, str]:
    """The query parameters of a URL (single-valued, as every OAuth parameter is)."""
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query, keep_blank_values=True))


# --- a real browser --------------------------------------------------------------------------
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def make_browser(page_load_timeout: float = 20.0) -> Any:
    """Headless Debian chromium through Debian's chromedriver, in a fresh profile.

    The background-networking flags matter: Chromium otherwise keeps dialling Google services,
    which this machine's closed network refuses, and it has been seen to stall on that. Both
    paths are given explicitly, so Selenium Manager (which would try to download a driver) never
    runs. The performance log is on, so a test can read the URLs the browser requested (e.g.
    the callback URL, to replay it). `quit()` also removes the profile directory."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="portcullis-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})

    class Browser(webdriver.Chrome):
        def quit(self) -> None:
            try:
                super().quit()
            finally:
                shutil.rmtree(profile, ignore_errors=True)

    try:
        driver = Browser(options=options, service=Service(executable_path=CHROMEDRIVER))
    except Exception:
        shutil.rmtree(profile, ignore_errors=True)
        raise
    driver.set_page_load_timeout(page_load_timeout)
    return driver


def requested_urls(driver: Any) -> list[str]:
    """Every URL the browser requested since the last call (Chrome's performance log drains
    when read), in order, from Network.requestWillBeSent events."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def _wait(predicate: Any, timeout: float, what: str, driver: Any) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:.0f}s; at {driver.current_url}\n"
                               f"{driver.page_source[:2000]}")
        time.sleep(0.05)


def idp_login(driver: Any, username: str, password: str = "any-password", timeout: float = 15.0) -> str:
    """Sign in on oidc-provider's development pages in the browser's current tab, and return
    the URL the IdP finally sent the browser to.

    The dev login page is a form posting `prompt=login`, `login` (any name: it becomes the
    account's sub) and `password` (anything) to /interaction/<uid>; the consent page is a form
    posting `prompt=consent` with one "Continue" button. Consent is asked only when the IdP
    session has no grant for the client yet, login only when it has no session, so each page
    is handled when it shows up, and the walk ends on the first page that is neither."""
    from selenium.webdriver.common.by import By

    def prompt() -> str | None:
        try:
            field = driver.find_elements(By.CSS_SELECTOR, 'form input[name="prompt"]')
            return field[0].get_attribute("value") if field else None
        except Exception:  # the page changed under us: look again
            return None

    def on_idp_step() -> bool:
        path = urllib.parse.urlsplit(driver.current_url).path
        return path.startswith("/interaction/") or path == "/auth" or path.startswith("/auth/")

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _wait(lambda: driver.execute_script("return document.readyState") == "complete", timeout,
              "page did not load", driver)
        step = prompt()
        if step == "login":
            form = driver.find_element(By.CSS_SELECTOR, 'form input[name="prompt"][value="login"]')
            form = form.find_element(By.XPATH, "./ancestor::form")
            login = form.find_element(By.NAME, "login")
            login.clear()
            login.send_keys(username)
            form.find_element(By.NAME, "password").send_keys(password)
            button = form.find_element(By.CSS_SELECTOR, 'button[type="submit"]')
            button.click()
            _wait(lambda: _stale(button), timeout, "the login form was not submitted", driver)
        elif step == "consent":
            button = driver.find_element(By.CSS_SELECTOR, 'form button[type="submit"]')
            button.click()
            _wait(lambda: _stale(button), timeout, "the consent form was not submitted", driver)
        elif on_idp_step():
            time.sleep(0.05)  # between redirects
        else:
            return str(driver.current_url)
    raise TimeoutError(f"still at the IdP after {timeout:.0f}s: {driver.current_url}\n{driver.page_source[:2000]}")


def _stale(element: Any) -> bool:
    """True once the page that held `element` is gone (the form was submitted)."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    try:
        element.is_enabled()
        return False
    except StaleElementReferenceException:
        return True
    except WebDriverException as e:
        # Chromium reports an element of a page that was just replaced this way as well.
        if "does not belong to the document" in str(e):
            return True
        raise


def idp_confirm_logout(driver: Any, timeout: float = 15.0) -> str:
    """Answer oidc-provider's "Do you want to sign-out?" page with "Yes, sign me out" (a form
    op.logoutForm posted to /session/end/confirm) and return where the IdP then sent the
    browser (the post_logout_redirect_uri, or its own /session/end/success page)."""
    from selenium.webdriver.common.by import By

    button = _wait(lambda: driver.find_elements(By.CSS_SELECTOR, 'button[name="logout"][value="yes"]'),
                   timeout, "no sign-out confirmation page", driver)[0]
    button.click()
    _wait(lambda: _stale(button), timeout, "the sign-out form was not submitted", driver)
    _wait(lambda: driver.execute_script("return document.readyState") == "complete", timeout,
          "page did not load", driver)
    return str(driver.current_url)


# --- the same flow over plain HTTP -----------------------------------------------------------
def idp_login_http(auth_url: str, username: str, stop_at: str, password: str = "any-password",
                   session: requests.Session | None = None, abort: bool = False,
                   max_steps: int = 12) -> str:
    """Walk an authorization request through the IdP with `requests` (its dev forms, posted by
    hand) and return the first redirect whose URL starts with `stop_at` (the redirect_uri),
    without following it: the caller decides what to do with the code.

    `abort=True` cancels at the login page (/interaction/<uid>/abort), so the IdP answers the
    redirect_uri with error=access_denied. The IdP's own cookies are not Secure over http, so
    a `requests.Session` keeps them; pass one in to keep the IdP session between calls."""
    http = session or requests.Session()
    url = auth_url
    for _ in range(max_steps):
        resp = http.get(url, allow_redirects=False, timeout=10)
        if resp.is_redirect:
            url = urllib.parse.urljoin(url, resp.headers["location"])
            if url.startswith(stop_at):
                return url
            continue
        if resp.status_code != 200:
            raise AssertionError(f"IdP answered {resp.status_code} at {url}: {resp.text[:500]}")
        if 'name="prompt" value="login"' in resp.text:
            if abort:
                url = url.rstrip("/") + "/abort"
                continue
            form = {"prompt": "login", "login": username, "password": password}
        elif 'name="prompt" value="consent"' in resp.text:
            form = {"prompt": "consent"}
        else:
            raise AssertionError(f"unexpected IdP page at {url}: {resp.text[:500]}")
        resp = http.post(url, data=form, allow_redirects=False, timeout=10)
        if not resp.is_redirect:
            raise AssertionError(f"IdP form at {url} answered {resp.status_code}: {resp.text[:500]}")
        url = urllib.parse.urljoin(url, resp.headers["location"])
        if url.startswith(stop_at):
            return url
    raise AssertionError(f"IdP did not redirect to {stop_at} within {max_steps} steps (last: {url})")


# --- cookies the standard jar will not send ---------------------------------------------------
def set_cookie_lines(resp: requests.Response) -> list[str]:
    """Every Set-Cookie header line of a response, unmerged (requests joins them with ", ",
    which is ambiguous next to Expires dates)."""
    return list(resp.raw.headers.getlist("set-cookie"))


def parse_set_cookie(line: str) -> tuple[str, str, dict[str, str]]:
    """(name, value, attributes with lower-cased names; flags map to "")."""
    first, *rest = line.split(";")
    name, _, value = first.strip().partition("=")
    attrs: dict[str, str] = {}
    for part in rest:
        key, _, val = part.strip().partition("=")
        if key:
            attrs[key.lower()] = val
    return name, value, attrs


class Cookies:
    """What a browser would keep from the plugin's answers, for `requests` calls.

    Needed because http.cookiejar never sends a `Secure` cookie to an http:// URL, while
    browsers treat 127.0.0.1 as a secure context and do. No domain/path logic: every cookie
    here is `Path=/` on one host, as the spec has them."""

    def __init__(self, values: dict[str, str] | None = None) -> None:
        self.values: dict[str, str] = dict(values or {})
        self.attrs: dict[str, dict[str, str]] = {}

    def update(self, resp: requests.Response) -> "Cookies":
        for line in set_cookie_lines(resp):
            name, value, attrs = parse_set_cookie(line)
            self.attrs[name] = attrs
            if attrs.get("max-age") == "0" or (not value and "expires" in attrs):
                self.values.pop(name, None)
            else:
                self.values[name] = value
        return self

    def header(self) -> str:
        return "; ".join(f"{name}={value}" for name, value in self.values.items())

    def copy(self) -> "Cookies":
        other = Cookies(self.values)
        other.attrs = {k: dict(v) for k, v in self.attrs.items()}
        return other

    def names(self) -> list[str]:
        return list(self.values)

    def __repr__(self) -> str:
        return f"Cookies({sorted(self.values)})"


# --- a redirect_uri that only records what it was given ---------------------------------------
class CallbackCatcher:
    """A tiny http server standing in for a relying party's redirect_uri: it records each
    request's path and query (only those to its own path: browsers also ask for /favicon.ico)
    and answers a small HTML page, so a browser has somewhere real to
    land and the test can read the code and state the IdP sent."""

    def __init__(self, path: str = "/cb") -> None:
        self.path = path
        self.hits: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if urllib.parse.urlsplit(self.path).path != outer.path:  # e.g. the favicon
                    self.send_error(404)
                    return
                outer.hits.append(self.path)
                body = b"<!doctype html><title>caught</title><p>callback received</p>"
                self.send_response(200)
                self.send_header("content-type", "text/html")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, name="callback-catcher", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
