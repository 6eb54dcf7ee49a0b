"""Smoke test of the load benchmark (bench/envoy/run.py): a tiny --quick run of one native and
one Portcullis configuration, and the status-mix check that marks a broken measurement.

The benchmark itself is not part of the test suite; this only proves the one command still
works and still tells a filter that does its job from one that does not.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from e2e_support import REPO

BENCH = REPO / "bench" / "envoy"
sys.path.insert(0, str(BENCH))

import report  # noqa: E402  (bench/envoy/report.py)

# The run itself takes ~15 s; the first one on a fresh machine also apt-get installs wrk.
pytestmark = pytest.mark.timeout(300)

CONFIGS = ["native-cached", "portcullis"]
WORKLOADS = ["single", "mixed"]


@pytest.fixture(scope="module")
def quick_run(wasm: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench")
    cmd = [sys.executable, str(BENCH / "run.py"), "--quick", "--duration", "1", "--warmup", "0",
           "--tokens", "20", "--mixed-tokens", "40", "--configs", ",".join(CONFIGS),
           "--workloads", ",".join(WORKLOADS), "--wasm", str(wasm), "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=280, cwd=REPO)
    results = out / "envoy-results.json"
    assert results.is_file(), f"no results (exit {done.returncode})\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done, json.loads(results.read_text())


def test_quick_run_succeeds_with_one_row_per_cell(quick_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]]) -> None:
    done, results = quick_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    cells = [(r["config"], r["workload"]) for r in results["rows"]]
    assert cells == [(c, w) for c in CONFIGS for w in WORKLOADS]
    assert all(r["status"] == "ok" for r in results["rows"]), results["rows"]


def test_rows_have_sane_numbers(quick_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]]) -> None:
    for row in quick_run[1]["rows"]:
        assert row["requests"] > 0 and row["rps"] > 0, row
        assert 0 < row["latency_us"]["p50"] <= row["latency_us"]["p99"], row
        assert row["rss_kib"] > 10_000, row  # an Envoy is tens of MiB at least
        assert row["vs_native-cached"] is not None, row


def test_mixed_workload_rejects_the_bad_tokens(quick_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]]) -> None:
    for row in quick_run[1]["rows"]:
        statuses = row["statuses"]
        if row["workload"] == "mixed":
            assert set(statuses) == {"200", "401"}, row
            assert 0.45 <= statuses["200"] / row["requests"] <= 0.55, row
        else:
            assert set(statuses) == {"200"}, row


def test_outputs_name_the_machine_and_the_command(quick_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]]) -> None:
    done, results = quick_run
    assert results["machine"]["nproc"] >= 1 and "1.40" in results["machine"]["envoy_version"]
    assert "--quick" in results["command"]
    for config in CONFIGS:
        assert config in done.stdout
    assert "vs native-cached" in done.stdout and "p99 ms" in done.stdout


def _result(statuses: dict[str, int]) -> dict[str, Any]:
    return {"requests": sum(statuses.values()), "statuses": statuses,
            "socket_errors": {"connect": 0, "read": 0, "write": 0, "timeout": 0}}


@pytest.mark.parametrize("statuses", [{"200": 100}, {"401": 100}, {"200": 50, "401": 30, "503": 20}])
def test_a_wrong_status_mix_makes_a_mixed_row_invalid(statuses: dict[str, int]) -> None:
    assert report.status_problems(_result(statuses), mixed=True, checks_tokens=True)


def test_the_right_mix_passes_and_no_filter_is_exempt_from_it() -> None:
    assert report.status_problems(_result({"200": 50, "401": 50}), mixed=True, checks_tokens=True) == []
    assert report.status_problems(_result({"200": 100}), mixed=True, checks_tokens=False) == []
    assert report.status_problems(_result({"401": 100}), mixed=False, checks_tokens=True)
