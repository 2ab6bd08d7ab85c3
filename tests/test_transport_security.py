"""Transport security at start-up: a broker password in clear is warned about (once), the
embedded broker listens on this box only unless configured, and a database password never
reaches a message."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from headend.config import load_config
from headend.daemon import Daemon, DaemonTuning
from headend.mqtt.broker import free_port

pytestmark = pytest.mark.timeout(120)

# Every 127.x.y.z reaches this box on Linux, but only a socket bound to 127.0.0.1 itself or
# to the wildcard address accepts a connection made to 127.0.0.2.
OTHER_ADDRESS = "127.0.0.2"


@contextlib.asynccontextmanager
async def running_daemon(tmp_path: Path, **settings: str) -> AsyncIterator[Daemon]:
    """A daemon on an empty SQLite inventory with the embedded broker, until the block ends."""
    environ = {
        "HEADEND_MASTER_KEY": secrets.token_hex(32),
        "HEADEND_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'headend.db'}",
        "HEADEND_MQTT_PORT": str(free_port()),
        "HEADEND_LOGGING_FORMAT": "console",
        **settings,
    }
    daemon = Daemon(
        load_config(None, environ),
        environ=environ,
        tuning=DaemonTuning(collection=False, install_signal_handlers=False),
    )
    task = asyncio.create_task(daemon.run())
    try:
        async with asyncio.timeout(30):
            while not daemon.ready.is_set():
                if task.done():
                    task.result()
                await asyncio.sleep(0.05)
            assert daemon.bridge is not None
            await daemon.bridge.wait_connected()
        yield daemon
    finally:
        daemon.request_stop()
        async with asyncio.timeout(30):
            await task


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


async def test_embedded_broker_listens_on_loopback_only_by_default(tmp_path: Path) -> None:
    async with running_daemon(tmp_path) as daemon:
        assert daemon.broker is not None and daemon.broker.host == "127.0.0.1"
        port = daemon.broker.port
        assert await asyncio.to_thread(_accepts, "127.0.0.1", port)
        assert not await asyncio.to_thread(_accepts, OTHER_ADDRESS, port)


async def test_embedded_broker_listens_where_configured(tmp_path: Path) -> None:
    async with running_daemon(tmp_path, HEADEND_MQTT_EMBEDDED_HOST="0.0.0.0") as daemon:
        assert daemon.broker is not None and daemon.broker.host == "0.0.0.0"
        assert daemon.broker_address == ("127.0.0.1", daemon.broker.port)  # the bridge's way in
        assert await asyncio.to_thread(_accepts, OTHER_ADDRESS, daemon.broker.port)


async def test_a_password_without_tls_is_warned_about_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    password = "hunter2-Pw"
    caplog.set_level(logging.WARNING, logger="headend.daemon")
    async with running_daemon(
        tmp_path, HEADEND_MQTT_USERNAME="headend", HEADEND_MQTT_PASSWORD=password
    ) as daemon:
        assert daemon.broker is not None
        await daemon.broker.restart()  # a reconnection is not a start: no second warning
        assert daemon.bridge is not None
        await daemon.bridge.wait_connected()
    warnings = [r for r in caplog.records if "without TLS" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert password not in caplog.text


async def test_no_warning_without_a_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="headend.daemon")
    async with running_daemon(tmp_path):
        pass
    assert not [r for r in caplog.records if "without TLS" in r.getMessage()]


def test_cli_never_prints_the_database_password(tmp_path: Path) -> None:
    """The database cannot be reached: the message names it, password masked."""
    secret = "s3cret-Pw"
    url = f"postgresql+asyncpg://headend:{secret}@127.0.0.1:{free_port()}/headend"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADEND_")}
    env.update(HEADEND_DATABASE_URL=url, HEADEND_MASTER_KEY=secrets.token_hex(32))
    for command in (["status"], ["meters", "list"]):
        run = subprocess.run(
            [sys.executable, "-m", "headend.cli", *command],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            env=env,
        )
        assert run.returncode != 0, command
        assert "headend:***@127.0.0.1" in run.stderr, (command, run.stderr)
        assert secret not in run.stdout + run.stderr, command
