"""Start, probe and stop a real HAProxy (Debian's 2.6) in front of one upstream, every request
decided by the Portcullis plugin in portcullis-spoa (the HAProxy SPOE agent).

The same interface as envoy_runner.EnvoyProcess, so tests and scripts/demo drive either proxy:

    proxy = HaproxyProcess(wasm="target/.../portcullis.wasm", plugin_config={...},
                           upstream_port=10001, workdir="out/demo-haproxy")
    proxy.start()            # agent, then `portcullis-spoa haproxy-config`, then haproxy
    proxy.url("/api/items")  # http://127.0.0.1:<frontend port>/api/items
    proxy.stop()

The HAProxy configuration is the one `portcullis-spoa haproxy-config` generates for the policy,
plus a readiness frontend (200 once HAProxy's health check reached the agent). Standard library only.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_WASM = REPO / "target" / "wasm32-wasip1" / "release" / "portcullis.wasm"


class HaproxyError(RuntimeError):
    """HAProxy or the agent did not start (or stop) as expected; the message carries the logs' tails."""


def find_haproxy() -> str:
    override = os.environ.get("PORTCULLIS_HAPROXY")
    if override:
        return override
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None)
    if not found:
        raise HaproxyError("no haproxy binary: run scripts/setup (it installs Debian's haproxy package)")
    return found


def find_agent() -> list[str]:
    """The agent binary: PORTCULLIS_SPOA, else the one cargo built (debug, then release)."""
    override = os.environ.get("PORTCULLIS_SPOA")
    if override:
        return [override]
    for profile in ("debug", "release"):
        built = REPO / "target" / profile / "portcullis-spoa"
        if built.is_file() and os.access(built, os.X_OK):
            return [str(built)]
    raise HaproxyError("portcullis-spoa not built: cargo build --workspace --bin portcullis-spoa")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class HaproxyProcess:
    kind = "haproxy"

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
        idp_port: int | None = None,
        agent_args: tuple[str, ...] = (),
        threads: int = 1,
        idp_url: str | None = None,
        config_args: tuple[str, ...] = (),
    ) -> None:
        self.wasm = Path(wasm)
        self.plugin_config = plugin_config
        self.upstream_port = upstream_port
        self.workdir = Path(workdir)
        self.requested_listen_port = listen_port
        self.requested_admin_port = admin_port
        self.concurrency = concurrency
        self.log_level = log_level
        self.idp_port = idp_port
        self.agent_args = agent_args
        self.threads = threads
        self.idp_url = idp_url  # the `idp` cluster's address, when not http://127.0.0.1:<idp_port>
        self.config_args = config_args  # more `haproxy-config` arguments (--route TAG=ADDR, say)
        self.policy_path = self.workdir / "policy.json"
        self.config_path = self.workdir / "haproxy.cfg"
        self.log_path = self.workdir / "haproxy.log"
        self.agent_log_path = self.workdir / "agent.log"
        self.agent: subprocess.Popen[bytes] | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.listen_port: int | None = None
        self.agent_port: int | None = None
        self.admin_port: int | None = None  # the agent's admin endpoint (/metrics)
        self.ready_port: int | None = None

    # --- lifecycle -------------------------------------------------------------------------
    def start(self, timeout: float = 60.0, wait_ready: bool = True) -> "HaproxyProcess":
        if not self.wasm.is_file():
            raise HaproxyError(f"plugin not built: {self.wasm} (run scripts/build)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        text = self.plugin_config if isinstance(self.plugin_config, str) else json.dumps(self.plugin_config, indent=2)
        self.policy_path.write_text(text)
        for log in (self.agent_log_path, self.log_path):  # a restart of the agent appends; a start does not
            log.unlink(missing_ok=True)
        self.start_agent(timeout)
        self.write_config()
        self.start_haproxy()
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def agent_command(self) -> list[str]:
        idp = self.idp_port if self.idp_port is not None else self.upstream_port
        return [
            *find_agent(), "serve",
            "--wasm", str(self.wasm.resolve()),
            "--policy", str(self.policy_path),
            "--listen", f"127.0.0.1:{self.agent_port or 0}",
            "--admin", f"127.0.0.1:{self.admin_port or self.requested_admin_port or 0}",
            "--workers", str(self.concurrency),
            "--cluster", f"idp={self.idp_url or f'http://127.0.0.1:{idp}'}",
            "--cluster", f"upstream=http://127.0.0.1:{self.upstream_port}",
            "--log-level", "info" if self.log_level in ("info", "warning", "error") else self.log_level,
            *self.agent_args,
        ]

    def start_agent(self, timeout: float = 60.0) -> None:
        """Starts the agent (again, on the same port after a restart) and waits for its ready line."""
        seen = len(self.agent_log())  # a restart appends: look only at what this agent prints
        with open(self.agent_log_path, "ab") as log:
            self.agent = subprocess.Popen(self.agent_command(), stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        marker = "portcullis-spoa: listening on "
        while time.monotonic() < deadline:
            if self.agent.poll() is not None:
                raise HaproxyError(f"portcullis-spoa exited with status {self.agent.returncode}\n{self.log_tail()}")
            for line in self.agent_log()[seen:].splitlines():
                if line.startswith(marker):
                    words = line[len(marker):].split()
                    self.agent_port = int(words[0].rsplit(":", 1)[1])
                    if "admin" in words:
                        self.admin_port = int(words[words.index("admin") + 1].rsplit(":", 1)[1])
                    if self.agent_port:
                        return
            time.sleep(0.05)
        raise HaproxyError(f"portcullis-spoa not listening within {timeout:.0f}s\n{self.log_tail()}")

    def write_config(self) -> None:
        self.listen_port = self.requested_listen_port or free_port()
        self.ready_port = free_port()
        made = subprocess.run(
            [*find_agent(), "haproxy-config", "--policy", str(self.policy_path),
             "--agent", f"127.0.0.1:{self.agent_port}", "--bind", f"127.0.0.1:{self.listen_port}",
             "--upstream", f"127.0.0.1:{self.upstream_port}", "--out", str(self.workdir),
             "--threads", str(self.threads), *self.config_args],
            capture_output=True, text=True,
        )
        if made.returncode != 0:
            raise HaproxyError(f"portcullis-spoa haproxy-config failed: {made.stderr.strip()}")
        cfg = self.config_path.read_text()
        # Readiness, for tests and the demo: HAProxy's own view of the agent (its spop-check).
        cfg += (
            "\nfrontend portcullis-ready\n"
            f"    bind 127.0.0.1:{self.ready_port}\n"
            "    http-request return status 200 content-type text/plain string ready if { nbsrv(portcullis-agents) gt 0 }\n"
            "    http-request return status 503 content-type text/plain string waiting\n"
        )
        self.config_path.write_text(cfg)

    def start_haproxy(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([find_haproxy(), "-db", "-f", str(self.config_path)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def agent_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ready_port}/", timeout=1.0) as resp:  # noqa: S310
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive("before it was ready")
            if self.agent_ready():
                return
            time.sleep(0.05)
        raise HaproxyError(f"HAProxy did not see the agent within {timeout:.0f}s\n{self.log_tail()}")

    def _check_alive(self, when: str) -> None:
        for name, proc in (("haproxy", self.proc), ("portcullis-spoa", self.agent)):
            if proc is not None and proc.poll() is not None:
                raise HaproxyError(f"{name} exited with status {proc.returncode} {when}\n{self.log_tail()}")

    def running(self) -> bool:
        return all(p is not None and p.poll() is None for p in (self.proc, self.agent))

    @staticmethod
    def _stop(proc: subprocess.Popen[bytes] | None, timeout: float, sig: int = signal.SIGTERM) -> int | None:
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return proc.returncode

    def kill_agent(self) -> None:
        """SIGKILL the agent (a crash, as far as HAProxy can tell)."""
        self._stop(self.agent, 5.0, signal.SIGKILL)

    def stop(self, timeout: float = 10.0) -> int | None:
        self._stop(self.agent, timeout)
        return self._stop(self.proc, timeout)

    def __enter__(self) -> "HaproxyProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- helpers ---------------------------------------------------------------------------
    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.listen_port}{path}"

    def admin_url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.admin_port}{path}"

    def agent_log(self) -> str:
        try:
            return self.agent_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_text(self) -> str:
        """The agent's lines (the plugin's decisions among them), then HAProxy's."""
        try:
            haproxy = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            haproxy = ""
        return self.agent_log() + haproxy

    def log_tail(self, lines: int = 80) -> str:
        parts = []
        for path in (self.agent_log_path, self.log_path):
            try:
                tail = path.read_text(errors="replace").splitlines()[-lines // 2:]
            except FileNotFoundError:
                tail = []
            parts.append(f"--- last {len(tail)} lines of {path} ---\n" + "\n".join(tail))
        return "\n".join(parts)

    def wait_for_log(self, needle: str, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log_text():
                return True
            time.sleep(0.05)
        return needle in self.log_text()
