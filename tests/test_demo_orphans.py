"""`headend demo` leaves nothing behind: closing its terminal (SIGHUP) stops it like Ctrl-C
(summary, simulator stopped), and killing it outright (SIGKILL, no cleanup at all) still
takes its dlms-sim with it: the simulator watches its parent (dlms-sim --parent-pid) and
stops, its meter ports closed. The demo prints its metrics URL, and that URL answers."""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from ops_support import Scrape

pytestmark = pytest.mark.timeout(150)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("HEADEND_")}


def _start_demo(tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    workdir = tmp_path / "demo"
    process = subprocess.Popen(
        [sys.executable, "-m", "headend.cli", "demo", "--workdir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env=_env(),
        start_new_session=True,  # signals go to the demo alone, as a test chooses
    )
    return process, workdir


def _read_until(process: subprocess.Popen[str], needle: str, within: float = 60) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + within
    seen = ""
    while needle not in seen and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen += line
    assert needle in seen, seen[-3000:]
    return seen


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found.append(int(entry.name))
    return found


def _simulator_of(demo_pid: int) -> int:
    for pid in _children(demo_pid):
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"simulators" in cmdline:
                return pid
    raise AssertionError(f"no dlms-sim child of the demo ({demo_pid})")


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper that may never come has exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _gone(pid: int, within: float = 20) -> bool:
    deadline = time.monotonic() + within
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _meter_ports(workdir: Path) -> list[tuple[str, int]]:
    with (workdir / "inventory.csv").open() as f:
        return [(row["host"], int(row["port"])) for row in csv.DictReader(f)]


def _listening(address: tuple[str, int]) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(address, timeout=2):
        return True
    return False


def test_sighup_stops_the_demo_like_ctrl_c_and_its_metrics_url_answers(tmp_path: Path) -> None:
    process, workdir = _start_demo(tmp_path)
    try:
        seen = _read_until(process, "demo: metrics http://")
        url = seen.split("demo: metrics ", 1)[1].split()[0]
        with urllib.request.urlopen(url, timeout=10) as response:
            exported = Scrape(response.read().decode()).exported_names()
        assert {"headend_polls_total", "headend_relay_commands_total"} <= exported
        seen += _read_until(process, "billing ->")  # the feed is running
        simulator = _simulator_of(process.pid)
        ports = _meter_ports(workdir)
        assert all(_listening(port) for port in ports)

        process.send_signal(signal.SIGHUP)  # the terminal closed
        out, _ = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    out = seen + out
    assert process.returncode == 0, out[-4000:]
    assert "Traceback" not in out
    assert "demo summary" in out
    assert _gone(simulator), "dlms-sim outlived the demo"
    assert not any(_listening(port) for port in ports)


def test_sigkill_of_the_demo_takes_its_simulator_along(tmp_path: Path) -> None:
    process, workdir = _start_demo(tmp_path)
    try:
        _read_until(process, "simulated meters imported")
        simulator = _simulator_of(process.pid)
        ports = _meter_ports(workdir)
        assert all(_listening(port) for port in ports)
        process.kill()  # SIGKILL: no handler, no cleanup, no finally
        process.wait(timeout=30)
        assert _gone(simulator), "dlms-sim left running after its parent was killed"
        assert not any(_listening(port) for port in ports)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stdout is not None
        process.stdout.close()
