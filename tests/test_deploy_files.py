"""docs/deploy/headend.service: a unit systemd accepts (systemd-analyze verify, where the
machine has it), of Type=notify with a watchdog, running `headend run` and stopping it with
SIGTERM, as the daemon's notifications (headend/observability/systemd.py) expect."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "docs" / "deploy" / "headend.service"


def _service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign] - keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser["Service"]


def test_the_unit_is_type_notify_with_a_watchdog_on_headend_run() -> None:
    service = _service()
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert int(service["WatchdogSec"]) > 0
    assert service["ExecStart"].split()[1:3] == ["run", "--config"]
    assert service["KillSignal"] == "SIGTERM"
    assert service["Restart"] == "on-failure"
    assert "HEADEND_MASTER_KEY=" not in UNIT.read_text()  # a credential, not the environment


def _verify(unit_text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    headend = Path(sys.executable).parent / "headend"
    unit = tmp_path / "headend.service"
    unit.write_text(unit_text.replace("/opt/headend/bin/headend", str(headend)))
    return subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    result = _verify(UNIT.read_text(), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "headend.service" not in result.stderr, result.stderr  # not even a warning


def test_systemd_analyze_would_catch_a_broken_unit(tmp_path: Path) -> None:
    broken = (
        UNIT.read_text().replace("Type=notify", "Type=notfy").replace("WatchdogSec", "Watchdog")
    )
    result = _verify(broken, tmp_path)
    assert "notfy" in result.stderr and "Watchdog" in result.stderr
