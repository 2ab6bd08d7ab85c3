"""No secret reaches a log line: `headend run` at DEBUG (JSON lines, the protocol trail on)
works a fleet of HLS-GMAC meters (polls, a disconnect and a reconnect, a bad event) on a
database whose URL carries a password and a broker login with a password; then every line is
searched for every secret in every spelling a slip would produce (text, hex either case,
base64).

The search is shown to work on a planted line, and the run is shown to have logged what the
test claims to cover (the trail with invocation counters, the per-task fields), so an empty
or quiet log cannot pass for a clean one."""

from __future__ import annotations

import base64
import json
import secrets
import signal
from pathlib import Path

import aiomqtt
import pytest
from e2e_support import eventually
from sqlalchemy.engine import make_url
from test_daemon_e2e import DaemonProcess, headend

from headend.observability.logs import configure_logging
from headend.observability.redaction import MASK

pytestmark = pytest.mark.timeout(180)


def spellings(secret: bytes | str) -> set[str]:
    """How a secret could appear in text by mistake."""
    raw = secret.encode() if isinstance(secret, str) else secret
    found = {raw.hex(), raw.hex().upper(), base64.b64encode(raw).decode()}
    if isinstance(secret, str) or (raw.isascii() and raw.decode().isprintable()):
        found.add(raw.decode())
    return {s for s in found if len(s) >= 6}


def leaks(lines: list[str], secret_spellings: dict[str, set[str]]) -> list[tuple[str, str]]:
    return [
        (name, line[:300])
        for line in lines
        for name, forms in secret_spellings.items()
        if any(form in line for form in forms)
    ]


def test_the_leak_search_finds_a_planted_secret() -> None:
    key = secrets.token_bytes(16)
    forms = {"key": spellings(key)}
    assert leaks([f"x {key.hex()} y"], forms) and leaks([base64.b64encode(key).decode()], forms)
    assert leaks(["pw hunter22 here"], {"pw": spellings("hunter22")})
    assert not leaks(["nothing here"], forms)


def test_the_redaction_processor_masks_what_slips_through(tmp_path: Path) -> None:
    """The second line of defence on its own: a secret handed to a logger by mistake."""
    import logging

    from headend.observability.logs import get_logger

    key = secrets.token_bytes(16)
    master = secrets.token_bytes(32)
    path = tmp_path / "log.jsonl"
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("DEBUG", "json", handler=logging.FileHandler(path))
        log = get_logger("headend.test")
        log.info("opening %s", "postgresql+asyncpg://he:Sup3rSecret@db/headend")
        log.warning("key was %s", key.hex(), auth_key=key, password="hunter22")
        logging.getLogger("somelib").error("master %s", master.hex().upper())
        log.info("raw", material=key)
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
    lines = path.read_text().splitlines()
    assert len(lines) == 4
    forms = {
        "key": spellings(key),
        "master": spellings(master),
        "pw": {"Sup3rSecret", "hunter22"},
    }
    assert leaks(lines, forms) == []
    entries = [json.loads(line) for line in lines]
    assert entries[0]["event"] == "opening postgresql+asyncpg://he:***@db/headend"
    assert entries[1]["auth_key"] == MASK and entries[1]["password"] == MASK
    assert MASK in entries[1]["event"] and MASK in entries[2]["event"]
    assert entries[3]["material"] == "<16 bytes>"


@pytest.mark.postgres
async def test_no_secret_in_any_log_line_of_a_secured_run_at_debug(sim_fleet, tmp_path) -> None:
    db_password = "Db-" + secrets.token_urlsafe(12)
    mqtt_password = "Mq-" + secrets.token_urlsafe(12)

    async def both_read() -> bool:
        assert h.repository is not None
        meters = [await h.repository.get_meter(m) for m in h.ids]
        return all(m is not None and m.last_reading_at is not None for m in meters)

    async with (
        sim_fleet(2, security="hls-gmac") as fleet,
        # PostgreSQL here runs with trust authentication: it accepts (and ignores) the
        # password, which is all this test needs: one that the daemon holds and must not log.
        headend(fleet, tmp_path, dialect="postgresql", start=False) as h,
    ):
        environ = dict(h.environ)
        environ["HEADEND_DATABASE_URL"] = (
            make_url(h.url).set(password=db_password).render_as_string(hide_password=False)
        )
        environ.update(
            HEADEND_LOGGING_LEVEL="DEBUG",
            HEADEND_LOGGING_FORMAT="json",
            HEADEND_MQTT_USERNAME="headend",
            HEADEND_MQTT_PASSWORD=mqtt_password,
        )
        daemon = DaemonProcess(environ, tmp_path)
        await daemon.start()
        try:
            async with aiomqtt.Client(h.broker.host, h.broker.port, timeout=10) as billing:
                h.billing = billing
                await h.balance(0, "-5.00", 1)
                await h.wait_state(0, "disconnected")
                await h.balance(0, "25.00", 2)
                await h.wait_state(0, "connected")
                truncated = b'{"meter_id": "' + h.ids[1].encode() + b'", "balance": '
                await h.send(h.ids[1], truncated)
                await eventually(both_read, within=60, what="a poll of each meter")
                await eventually(
                    lambda: "bad balance event" in daemon.log.read_text(),
                    what="bad event logged",
                )
                h.billing = None
        finally:
            assert await daemon.signal(signal.SIGTERM) == 0

    lines = daemon.log.read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # JSON lines, every one
    forms = {
        "master key": spellings(bytes.fromhex(h.environ["HEADEND_MASTER_KEY"])),
        "database password": {db_password},
        "mqtt password": {mqtt_password},
    }
    for i in range(len(fleet)):
        config = fleet.config(i)
        forms[f"meter {i} password"] = spellings(config.password)
        forms[f"meter {i} authentication key"] = spellings(config.auth_key)
        forms[f"meter {i} encryption key"] = spellings(config.enc_key)
    assert leaks(lines, forms) == []

    # What the run covered, so a quiet log cannot pass for a clean one.
    trail = [e for e in entries if e["event"] == "apdu sent"]
    assert any("invocation_counter" in e for e in trail), "no ciphered APDU in the trail"
    assert any(e.get("apdu", "").startswith("aarq") for e in trail)
    assert any(e["event"] == "apdu received" and "elapsed_ms" in e for e in entries)
    assert all(e.get("instance_id") for e in entries if e["logger"].startswith("headend"))
    assert any(e.get("meter_id") == h.ids[0] and e.get("command_id") for e in entries)
    assert any(e.get("event_id") and e.get("meter_id") == h.ids[0] for e in entries)
    assert {e["level"] for e in entries} >= {"debug", "info", "warning"}
