"""A session refreshed with a real refresh token: oidc-provider issuing refresh tokens and ID
tokens that live 62 s, so the plugin's one-minute margin is reached a few seconds after signing
in. In Envoy the renewed cookies come back on the response; behind HAProxy (the agent runs the
request phase only) the request still passes with the refreshed claims but no cookie is set, as
docs/configuration.md says. The policy names no endpoints, so the plugin reads them from the
provider's discovery document first."""

from __future__ import annotations

import time
from typing import Any, Iterator

import pytest

from e2e_support import free_port
from oidc_support import OidcProvider
from test_login import (CALLBACK, CLIENT_ID, CLIENT_SECRET, KEY_A, SIGNED_OUT, get, login,
                        login_config, session_cookie_names, upstream_seen)

ID_TOKEN_SECONDS = 62


class RefreshingProvider(OidcProvider):
    """The test IdP, issuing refresh tokens and short-lived ID tokens."""

    def command(self) -> list[str]:
        return super().command() + ["--refresh-tokens", "--id-token-ttl", str(ID_TOKEN_SECONDS)]


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def idp(port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    origin = f"http://127.0.0.1:{port}"
    provider = RefreshingProvider(
        tmp_path_factory.mktemp("idp-refresh"), redirect_uris=[origin + CALLBACK],
        post_logout_redirect_uris=[origin + SIGNED_OUT], client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
    ).start()
    yield provider
    provider.stop()


@pytest.fixture(scope="module")
def proxy(start_envoy, idp: OidcProvider, port: int) -> Any:
    # No endpoints in the policy: the plugin reads them from the provider's discovery document.
    config = login_config(idp, [KEY_A])
    for endpoint in ("authorization_endpoint", "token_endpoint", "end_session_endpoint"):
        del config["providers"]["idp"]["login"][endpoint]
    return start_envoy(config, listen_port=port, idp_port=idp.port)


def test_a_session_is_refreshed_near_its_id_tokens_expiry(proxy: Any, idp: OidcProvider) -> None:
    jar = login(proxy, idp, "carol")  # start_flow checks the redirect goes to the discovered /auth
    tokens_after_login = idp.stats()["token"]
    first = get(proxy, "/app/x", jar, Accept="application/json")
    assert first.status_code == 200, first.text[:300]
    assert idp.stats()["token"] == tokens_after_login, "a fresh ID token needs no refresh"

    time.sleep(3)  # now within 60 s of the ID token's expiry
    refreshed = get(proxy, "/app/x", jar, Accept="application/json")
    assert refreshed.status_code == 200, refreshed.text[:300]
    assert upstream_seen(refreshed)["headers"].get("x-user-sub") == "carol"
    assert idp.stats()["token"] == tokens_after_login + 1, "one refresh grant at the token endpoint"
    assert proxy.wait_for_log('detail="session refreshed; session valid'), proxy.log_tail()
    renewed = jar.copy().update(refreshed)
    if proxy.kind == "envoy":
        set_names = [c.split("=", 1)[0] for c in refreshed.headers.get("set-cookie", "").split(", ") if "=" in c]
        assert session_cookie_names(set_names), refreshed.headers
        assert renewed.header() != jar.header(), "the renewed session cookie differs"
        again = get(proxy, "/app/x", renewed, Accept="application/json")
        assert again.status_code == 200
        assert idp.stats()["token"] == tokens_after_login + 1, "the renewed session needs no refresh"
    else:
        assert "set-cookie" not in refreshed.headers, refreshed.headers
