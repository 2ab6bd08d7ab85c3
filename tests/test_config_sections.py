"""The sections added for the cluster, the listener, metrics and the prepaid policies: their
defaults (DESIGN.md), the list-of-tables quiet windows, and errors that name the key."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from headend.config import ConfigError, QuietWindow, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "headend.toml"
    path.write_text(text)
    return path


def test_defaults_keep_everything_off() -> None:
    config = load_config(None, {})
    assert config.cluster.enabled is False and config.cluster.lease_s == 30
    assert config.cluster.instance_id == ""
    assert config.mqtt.share_group == "headend"
    assert (config.listener.tcp_port, config.listener.udp_port) == (0, 0)
    assert config.metrics.port == 0
    prepaid = config.prepaid
    assert prepaid.price_per_kwh == Decimal("0.60")
    assert prepaid.warn_days_ahead == 3 and prepaid.disconnect_grace_s == 0
    assert prepaid.timezone == "UTC" and prepaid.no_disconnect == ()
    assert prepaid.holidays_file is None and prepaid.statement_interval_s == 0
    assert prepaid.arrears_action == "disconnect"


def test_quiet_windows_are_a_list_of_tables(tmp_path: Path) -> None:
    holidays = tmp_path / "holidays.txt"
    holidays.write_text("2026-10-01\n# national day week\n2026-10-02\n")
    config = load_config(
        write(
            tmp_path,
            f"""
            [prepaid]
            no_disconnect = [{{ from = "18:00", to = "08:00" }},
                             {{ from = "00:00", to = "23:59", days = ["sat", "sun"] }}]
            timezone = "Asia/Shanghai"
            holidays_file = "{holidays}"
            """,
        ),
        {},
    )
    assert config.prepaid.no_disconnect == (
        QuietWindow("18:00", "08:00"),
        QuietWindow("00:00", "23:59", ("sat", "sun")),
    )
    assert config.prepaid.holidays_file == holidays
    env = {"HEADEND_PREPAID_NO_DISCONNECT": '[{"from": "22:00", "to": "06:00"}]'}
    assert load_config(None, env).prepaid.no_disconnect == (QuietWindow("22:00", "06:00"),)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[cluster]\nenabled = true\n", "cluster.enabled"),
        ("[cluster]\nlease_s = 0\n", "cluster.lease_s"),
        ('[mqtt]\nshare_group = "a/b"\n', "mqtt.share_group"),
        ("[listener]\ntcp_port = 70000\n", "listener.tcp_port"),
        ("[metrics]\nport = -1\n", "metrics.port"),
        (
            '[prepaid]\nno_disconnect = [{ from = "25:00", to = "01:00" }]\n',
            "prepaid.no_disconnect[0].from",
        ),
        (
            '[prepaid]\nno_disconnect = [{ from = "01:00", to = "01:00" }]\n',
            "prepaid.no_disconnect[0].to",
        ),
        (
            '[prepaid]\nno_disconnect = [{ from = "01:00", to = "02:00", days = ["fri", "x"] }]\n',
            "prepaid.no_disconnect[0].days",
        ),
        (
            '[prepaid]\nno_disconnect = [{ from = "01:00", to = "02:00", when = 1 }]\n',
            "prepaid.no_disconnect[0].when",
        ),
        ('[prepaid]\nno_disconnect = ["18:00-08:00"]\n', "prepaid.no_disconnect[0]"),
        ('[prepaid]\ntimezone = "Mars/Olympus"\n', "prepaid.timezone"),
        ('[prepaid]\narrears_action = "limit"\n', "prepaid.limit_w"),
        ('[prepaid]\narrears_action = "shout"\n', "prepaid.arrears_action"),
        ('[prepaid]\nprice_per_kwh = "-1"\n', "prepaid.price_per_kwh"),
        ('[prepaid]\nholidays_file = "/nonexistent/holidays.txt"\n', "prepaid.holidays_file"),
    ],
)
def test_bad_values_name_their_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), {})
    assert info.value.key == key, str(info.value)


def test_a_holiday_that_is_not_a_date_names_its_line(tmp_path: Path) -> None:
    holidays = tmp_path / "holidays.txt"
    holidays.write_text("2026-10-01\n1 October\n")
    with pytest.raises(ConfigError, match=r"holidays.txt:2: not an ISO date"):
        load_config(write(tmp_path, f'[prepaid]\nholidays_file = "{holidays}"\n'), {})
