"""Smoke test of the HAProxy load benchmark (bench/haproxy/run.py): a one-second run of the
no-filter, native and portcullis columns (with the agent this test run built), plus the parts
that adapt the agent's generated config.

The benchmark itself is not part of the test suite; this proves the command works, that the
native HAProxy config passes the probes (valid 200, expired/forged/... 401) on the installed
HAProxy, and that the SPOE plumbing (generated config, agent readiness, SPOE time) holds.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from e2e_support import REPO
from haproxy_runner import find_agent

BENCH = REPO / "bench" / "haproxy"
sys.path[:0] = [str(BENCH), str(REPO / "bench" / "envoy")]

import columns  # noqa: E402  (bench/haproxy/columns.py)

pytestmark = pytest.mark.timeout(300)
CONFIGS = ["no-filter", "native", "portcullis"]
WORKLOADS = ["single", "mixed"]


def haproxy_installed() -> bool:
    return bool(shutil.which("haproxy")) or Path("/usr/sbin/haproxy").is_file()


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    if not haproxy_installed():
        pytest.fail("haproxy is not installed: run scripts/setup", pytrace=False)
    out = tmp_path_factory.mktemp("hbench")
    cmd = [sys.executable, str(BENCH / "run.py"), "--duration", "1", "--warmup", "0", "--tokens", "20",
           "--mixed-tokens", "40", "--configs", ",".join(CONFIGS), "--workloads", ",".join(WORKLOADS),
           "--upstream", "haproxy", "--agent", find_agent()[0], "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=280, cwd=REPO)
    results = out / "haproxy-results.json"
    assert results.is_file(), f"no results (exit {done.returncode})\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done, json.loads(results.read_text())


def test_quick_run_measures_every_cell(quick_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]]) -> None:
    done, results = quick_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = results["rows"]
    assert [(r["config"], r["workload"]) for r in rows] == [(c, w) for c in CONFIGS for w in WORKLOADS]
    assert all(r["status"] == "ok" for r in rows), rows
    mixed = {r["config"]: r["statuses"] for r in rows if r["workload"] == "mixed"}
    assert set(mixed["native"]) == {"200", "401"} and set(mixed["portcullis"]) == {"200", "401"}
    assert set(mixed["no-filter"]) == {"200"}


def test_portcullis_column_reports_agent_and_spoe_time(
        quick_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]]) -> None:
    _, results = quick_run
    for row in (r for r in results["rows"] if r["config"] == "portcullis"):
        assert set(row["rss_kib_by_process"]) == {"haproxy", "agent"}
        assert row["spoe_ms"] is not None and row["spoe_ms"]["count"] > 0 and row["spoe_ms"]["missing"] == 0
    for row in (r for r in results["rows"] if r["config"] != "portcullis"):
        assert row["spoe_ms"] is None and "agent" not in row["rss_kib_by_process"]


def test_missing_agent_skips_its_columns(tmp_path: Path) -> None:
    cmd = [sys.executable, str(BENCH / "run.py"), "--duration", "1", "--warmup", "0", "--tokens", "4",
           "--mixed-tokens", "4", "--configs", "portcullis", "--workloads", "single", "--upstream", "haproxy",
           "--agent", str(tmp_path / "no-such-agent"), "--out", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "portcullis: SKIPPED" in done.stdout
    (row,) = json.loads((tmp_path / "haproxy-results.json").read_text())["rows"]
    assert row["status"] == "skipped" and "not built" in row["detail"]


def test_generated_config_gets_one_thread_and_the_spoe_time_rule() -> None:
    generated = "\n".join([
        "global", "    log stdout format raw local0 info", "    nbthread 4", "    cpu-map auto:1/1-4 0-3",
        "    daemon", "",
        "frontend fe", "    bind 127.0.0.1:1", "    filter spoe engine e config e.conf", "",
        "backend agents", "    mode tcp", ""])
    text, notes = columns.adapt_generated(generated, "txn.pc.pt")
    lines = [line.split("#")[0].strip() for line in text.splitlines()]
    assert lines[:2] == ["global", "nbthread 1"]
    assert "cpu-map auto:1/1-4 0-3" not in lines and "daemon" not in lines and "nbthread 4" not in lines
    assert not any(line.startswith("log ") for line in lines)
    assert lines[lines.index("frontend fe") + 1] == 'http-after-response set-header x-spoe-ms "%[var(txn.pc.pt)]"'
    assert len(notes) == 4
    text, _ = columns.adapt_generated("frontend fe\n    bind 127.0.0.1:1\n")
    assert text.startswith("global\n    nbthread 1")
    with pytest.raises(columns.GeneratedConfigError):
        columns.adapt_generated("backend b\n    server s 127.0.0.1:1\n")


def test_spoe_time_variable_follows_the_spoe_file() -> None:
    assert columns.spoe_time_var("[e]\nspoe-agent a\n    option var-prefix pc\n    option set-process-time pt\n") \
        == "txn.pc.pt"
    assert columns.spoe_time_var("[e]\nspoe-agent a\n    option set-process-time pt\n") == "txn.a.pt"
    assert columns.spoe_time_var("[e]\nspoe-agent a\n    option var-prefix pc\n") is None
