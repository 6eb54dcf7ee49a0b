"""scripts/demo.py --check: the demo's own requests, on free ports, through each proxy."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from e2e_support import REPO, free_port


@pytest.mark.parametrize("proxy", ["envoy", "haproxy"])
def test_demo_check(wasm, tmp_path, proxy):
    env = dict(os.environ, PORTCULLIS_DEMO_DIR=str(tmp_path),
               PORTCULLIS_WASM=str(wasm),
               PORTCULLIS_LISTEN_PORT=str(free_port()),
               PORTCULLIS_ADMIN_PORT=str(free_port()),
               PORTCULLIS_UPSTREAM_PORT=str(free_port()),
               PORTCULLIS_IDP_PORT=str(free_port()))
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), "--check", "--proxy", proxy],
                            env=env, cwd=REPO, capture_output=True, text=True, timeout=150)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "8 passed, 0 failed" in result.stdout, result.stdout


@pytest.mark.envoy_only  # browser sign-in runs in Envoy only; this runs once, not once per proxy
def test_demo_login_check(wasm, tmp_path):
    """scripts/demo.py --login --check: the real IdP, headless Chromium, sign-in, reload, logout."""
    env = dict(os.environ, PORTCULLIS_DEMO_DIR=str(tmp_path),
               PORTCULLIS_WASM=str(wasm),
               PORTCULLIS_LISTEN_PORT=str(free_port()),
               PORTCULLIS_ADMIN_PORT=str(free_port()),
               PORTCULLIS_UPSTREAM_PORT=str(free_port()),
               PORTCULLIS_IDP_PORT=str(free_port()))
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), "--login", "--check"],
                            env=env, cwd=REPO, capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "10 passed, 0 failed" in result.stdout, result.stdout
    assert "x-user-sub=demo, x-user-email=demo@example.test" in result.stdout, result.stdout
