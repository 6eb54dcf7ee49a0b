"""A plugin configuration that does not validate stops the plugin from starting.

Behind HAProxy, portcullis-spoa refuses to start, naming the field; HAProxy is never started on
that policy, and an HAProxy whose agent is down refuses every request (test_haproxy.py).

With a static Envoy config and `failure_policy: FAIL_CLOSED`, Envoy 1.40 then refuses the
whole configuration and exits ("Unable to create Wasm plugin portcullis"): no listener is
ever bound, so no request can get through. The plugin's own message, naming the offending
field, is in Envoy's log just before.
"""

from __future__ import annotations

import json
import socket
import subprocess

import pytest

from e2e_support import Keys, base_config, free_port, plugin_log_lines
from envoy_runner import EnvoyError
from haproxy_runner import HaproxyError


def broken(keys: Keys, case: str) -> str:
    config = base_config(keys)
    if case == "not-json":
        return json.dumps(config)[:-40]
    if case == "clock_skew_seconds":
        config["providers"]["e2e"]["clock_skew_seconds"] = "sixty"
    elif case == "issuer":
        config["providers"]["e2e"]["issuer"] = "http://issuer.example.com"  # plain http off localhost
    elif case == "mode":
        config["mode"] = "enforcing"
    elif case == "regex":
        config["rules"][2]["match"]["path"]["regex"] = "^/admin("
    elif case == "nope":
        config["rules"][1]["providers"] = ["nope"]  # a provider that is not defined
    elif case == "jwks":
        config["providers"]["e2e"]["jwks"] = {"keys": [{"kty": "RSA", "kid": "x", "n": "AQAB"}]}
    return json.dumps(config, indent=2)


# case -> what the plugin's message must name (the JSON path of the offending field)
NAMES = {
    "not-json": None,
    "clock_skew_seconds": "providers.e2e.clock_skew_seconds",
    "issuer": "providers.e2e.issuer",
    "mode": "mode",
    "regex": "rules[2].match.path.regex",
    "nope": "nope",
    "jwks": "providers.e2e.jwks",
}


@pytest.mark.parametrize("case", list(NAMES))
def test_invalid_config_fails_closed(start_envoy, keys, case):
    port = free_port()
    if start_envoy.kind == "haproxy":
        with pytest.raises(HaproxyError, match="portcullis-spoa exited") as err:
            start_envoy(broken(keys, case), listen_port=port)
        assert "invalid policy" in str(err.value), err.value
        if NAMES[case]:
            assert NAMES[case] in str(err.value), err.value
        with socket.socket() as sock:
            sock.settimeout(2)
            assert sock.connect_ex(("127.0.0.1", port)) != 0, "something listens on the proxy's port"
        return
    envoy = start_envoy(broken(keys, case), wait_ready=False, listen_port=port)
    try:
        envoy.wait_ready(timeout=60)
    except EnvoyError:
        pass  # expected: it exited (or never became ready)
    else:
        pytest.fail(f"Envoy became ready with an invalid plugin config\n{envoy.log_tail()}")
    try:
        status = envoy.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"Envoy kept running with an invalid plugin config\n{envoy.log_tail()}")
    assert status != 0
    log = envoy.log_text()
    assert "Unable to create Wasm plugin" in log or "failed to load" in log, envoy.log_tail()

    messages = [line for line in plugin_log_lines(envoy) if "[error]" in line or "[critical]" in line]
    assert messages, f"the plugin logged no error\n{envoy.log_tail()}"
    if NAMES[case]:
        assert any(NAMES[case] in line for line in messages), f"no plugin error names {NAMES[case]!r}: {messages}"

    with socket.socket() as sock:
        sock.settimeout(2)
        assert sock.connect_ex(("127.0.0.1", port)) != 0, "something listens on the plugin's port"
