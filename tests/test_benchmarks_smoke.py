"""The benchmark harness works: every benchmark runs at a tiny size through the real command
line (`python -m benchmarks <name> ... --json`) and prints one JSON object of the promised
shape with zero failures. Timings are never asserted here: speed is what the benchmarks
themselves report (benchmarks/README.md)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(*argv: str, timeout: float = 110) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert done.returncode == 0, (
        f"exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    )
    assert len(lines) == 1, f"expected one JSON line, got:\n{done.stdout[-2000:]}"
    result: dict[str, Any] = json.loads(lines[0])
    return result


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def test_listing_names_every_benchmark() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for name in (
        "fleet",
        "fleet-hdlc",
        "session-cpu",
        "storage-ingest",
        "inventory-scale",
        "load-profile",
        "relay-latency",
    ):
        assert name in done.stdout


def test_fleet_prints_the_promised_keys() -> None:
    result = run_benchmark(
        "fleet",
        "--meters", "5",
        "--latency-ms", "5",
        "--baseline-meters", "5",
        "--baseline-threads", "2",
        "--security", "none,hls-gmac",
        "--json",
    )  # fmt: skip
    for key in (
        "meters",
        "meters_per_s",
        "baseline_meters_per_s",
        "ratio",
        "client_cpu_ms_per_session",
        "floor_cpu_ms_per_session",
        "io_floor_cpu_ms_per_session",
        "p99_session_s",
        "failures",
    ):
        assert key in result, key
    assert result["meters"] == 5
    assert _is_number(result["io_floor_cpu_ms_per_session"])
    assert result["failures"] == 0
    for key in ("meters_per_s", "baseline_meters_per_s", "ratio", "floor_cpu_ms_per_session"):
        assert _is_number(result[key]) and result[key] > 0, key
    assert set(result["runs"]) == {"none", "hls-gmac"}
    for run in result["runs"].values():
        assert run["detail"]["sessions"] == 5
        assert run["detail"]["baseline"]["sessions"] == 5
        assert [g["met"] for g in run["goals"]][-1] is True  # zero failures


def test_fleet_over_hdlc_beside_the_wrapper() -> None:
    result = run_benchmark("fleet-hdlc", "--meters", "5", "--latency-ms", "5", "--json")
    assert result["failures"] == 0
    assert result["detail"]["hdlc"]["sessions"] == 5
    assert result["detail"]["wrapper"]["sessions"] == 5
    assert _is_number(result["hdlc_cpu_overhead"])
    assert result["floor_cpu_ms_per_session"] > 0


def test_session_cpu_reports_every_figure_beside_the_floor() -> None:
    result = run_benchmark(
        "session-cpu", "--security", "none", "--min-s", "0.02", "--min-sessions", "3", "--json"
    )
    figures = result["none"]
    for key in (
        "floor_dlms_cosem_cpu_us",
        "dlms_cosem_blocking_tcp_cpu_us",
        "io_floor_wrapper_cpu_us",
        "sansio_wrapper_cpu_us",
        "sansio_hdlc_cpu_us",
        "full_wrapper_cpu_us",
        "full_hdlc_cpu_us",
    ):
        assert _is_number(figures[key]) and figures[key] > 0, key
    assert figures["round_trips_per_session"] == 6  # AARQ, 4 GETs, RLRQ
    assert _is_number(figures["ratio_full_wrapper_to_floor"])
    assert result["failures"] == 0


def test_storage_ingest_stores_every_row() -> None:
    result = run_benchmark(
        "storage-ingest", "--rows", "400", "--meters", "10", "--batch", "100", "--json"
    )
    assert result["failures"] == 0
    sqlite = result["sqlite"]
    assert sqlite["repository_rows_stored"] == 400
    assert sqlite["baseline_raw_insert_rows_stored"] == 400
    assert _is_number(sqlite["ratio_to_baseline"])
    postgres = result["postgresql"]
    if "skipped" not in postgres:
        assert postgres["repository_rows_stored"] == 400
        assert postgres["ceiling_copy_rows_stored"] == 400


def test_inventory_scale_imports_and_idles_the_daemon() -> None:
    result = run_benchmark("inventory-scale", "--meters", "50", "--idle-s", "0.5", "--json")
    assert result["failures"] == 0
    assert result["scheduler"]["polls"] == 50
    daemon = result["daemon"]
    assert daemon["exit_code"] == 0
    assert daemon["rss_mb"] > 0 and daemon["peak_rss_mb"] >= daemon["rss_mb"]
    assert "50 meter(s)" in daemon["ready_line"]
    assert result["goal"]["target"] == 1024.0


def test_load_profile_reads_every_entry() -> None:
    result = run_benchmark("load-profile", "--days", "1", "--repeat", "1", "--json")
    assert result["failures"] == 0
    assert result["entries"] == result["expected_entries"] == 96
    assert result["baseline_entries"] == 96
    assert result["blocks"] >= 1
    assert _is_number(result["floor_cpu_us_per_entry"])


@pytest.mark.skipif(not _reachable("127.0.0.1", 1883), reason="needs Mosquitto on 127.0.0.1:1883")
def test_relay_latency_confirms_every_event() -> None:
    result = run_benchmark(
        "relay-latency",
        "--meters", "12",
        "--events", "5",
        "--rate", "10",
        "--latency-ms", "5",
        "--poll-rate", "2",
        "--warmup-s", "0.5",
        "--settle-timeout", "60",
        "--json",
    )  # fmt: skip
    assert result["failures"] == 0
    assert result["confirmed"] == result["events"] == 5
    assert result["command_statuses"]["confirmed"] >= 5
    for key in ("p50_s", "p99_s", "max_s", "ratio_p99_to_floor"):
        assert _is_number(result[key]), key


@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs the mosquitto binary")
def test_billing_batch_confirms_every_command() -> None:
    result = run_benchmark(
        "billing-batch",
        "--meters", "30",
        "--events", "20",
        "--payments", "5",
        "--latency-ms", "5",
        "--settle-timeout", "60",
        "--json",
    )  # fmt: skip
    assert result["failures"] == 0 and result["confirmed"] == 25
    for key in (
        "drain_s",
        "events_committed_per_s",
        "reconnect_p50_s",
        "reconnect_p99_s",
        "outbox_lag_p99_s",
        "daemon_cpu_percent",
    ):
        assert _is_number(result[key]), key
    assert "others_cpu_percent" in result


def test_all_runs_the_suite_and_collects_results(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    result = run_benchmark(
        "all", "--quick", "--only", "storage-ingest", "--json", "--out", str(out)
    )
    assert {"nproc", "cpu", "ram_gb", "python", "date"} <= set(result["machine"])
    [entry] = result["results"]
    assert entry["benchmark"] == "storage-ingest"
    assert entry["exit_code"] == 0 and entry["failures"] == 0
    assert json.loads(out.read_text())["results"][0]["benchmark"] == "storage-ingest"


def test_push_receives_every_push() -> None:
    result = run_benchmark("push", "--meters", "20", "--json")
    assert result["failures"] == []
    assert result["received"] == 20
    for key in ("pushes_per_s", "cpu_per_push_ms", "decode_floor_ms", "cpu_vs_floor"):
        assert _is_number(result[key]), key


@pytest.mark.skipif(not _reachable("127.0.0.1", 1883), reason="needs Mosquitto on 127.0.0.1:1883")
def test_soak_samples_every_figure_and_fits_the_slopes() -> None:
    # Forty seconds instead of an hour: every sample has its figures (the raw insert baseline
    # among them, on the readings table as the daemon stores it), and the slopes are fitted.
    result = run_benchmark(
        "soak",
        "--meters", "10",
        "--interval-s", "2",
        "--minutes", "0.7",
        "--sample-s", "7",
        "--warmup-min", "0.1",
        "--event-s", "1",
        "--json",
    )  # fmt: skip
    assert result["failures"] == 0
    assert result["balance_events_sent"] > 0
    samples = result["samples"]
    assert len(samples) >= 4
    for sample in samples:
        for key in ("rss_mb", "open_files", "polls", "outbox_depth", "readings"):
            assert _is_number(sample[key]), (key, sample)
    assert sum(_is_number(s["raw_insert_cpu_ms"]) for s in samples) >= len(samples) - 1
    assert samples[-1]["readings"] > samples[0]["readings"]
    for key in ("rss_slope_mb_per_min", "open_files_slope_per_min", "cpu_per_poll_ratio"):
        assert _is_number(result[key]), key
