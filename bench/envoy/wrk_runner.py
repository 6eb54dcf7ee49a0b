"""wrk: make sure it is installed, run it pinned to its own core, read load.lua's result line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LUA = Path(__file__).resolve().parent / "load.lua"
RESULT_MARKER = "BENCH_RESULT "


class WrkError(RuntimeError):
    pass


def ensure_wrk() -> str:
    """CI machines are fresh Debian, running as root: install the Debian package if missing."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise WrkError("wrk is not installed and I cannot apt-get it here: install the 'wrk' package")
    print("bench: installing wrk (apt-get install wrk)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise WrkError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    found = shutil.which("wrk")
    if not found:
        raise WrkError("apt-get installed wrk but it is not on PATH")
    return found


def wrk_version(wrk: str) -> str:
    # wrk has no --version; its usage text starts with the version line (and exits 1).
    out = subprocess.run([wrk, "-v"], capture_output=True, text=True)
    text = (out.stdout or out.stderr).strip()
    # "wrk debian/4.1.0-3+b2 [epoll] Copyright (C) 2012 Will Glozer" -> "wrk debian/4.1.0-3+b2"
    return " ".join(text.splitlines()[0].split()[:2]) if text else "unknown"


@dataclass(frozen=True)
class LoadSpec:
    url: str
    token_file: Path
    seconds: float
    connections: int
    threads: int
    cpu: str  # taskset CPU list for wrk
    start: int = 1  # position in the token file of the first request
    header: str | None = None  # a response header whose values load.lua counts ("header" in the result)


def command(wrk: str, spec: LoadSpec) -> list[str]:
    duration = f"{max(1, round(spec.seconds))}s"  # wrk takes whole seconds
    return [
        "taskset", "-c", spec.cpu, wrk,
        "-t", str(spec.threads), "-c", str(spec.connections), "-d", duration,
        "--timeout", "5s", "-s", str(LUA), spec.url, "--", str(spec.token_file), str(spec.start),
        *([spec.header] if spec.header else []),
    ]


def run(wrk: str, spec: LoadSpec) -> dict[str, Any]:
    """One wrk run; returns load.lua's result (requests, latency_us, statuses, socket_errors, and
    header when spec.header is set)."""
    cmd = command(wrk, spec)
    # Own session: a Ctrl-C reaches us first, and we stop wrk by its process group below.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=spec.seconds + 60)
    except BaseException:
        stop(proc)
        raise
    if proc.returncode != 0:
        raise WrkError(f"wrk exited {proc.returncode}: {' '.join(cmd)}\n{err[-2000:]}{out[-2000:]}")
    return parse(out)


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def parse(output: str) -> dict[str, Any]:
    for line in output.splitlines():
        if line.startswith(RESULT_MARKER):
            result: dict[str, Any] = json.loads(line[len(RESULT_MARKER):])
            result["statuses"] = {k: int(v) for k, v in sorted(result["statuses"].items())}
            return result
    raise WrkError(f"wrk printed no {RESULT_MARKER.strip()} line:\n{output[-2000:]}")
