"""Wake-ups between members: PostgreSQL LISTEN/NOTIFY on `headend_command`.

Whichever member commits a balance event, the command it creates fires a NOTIFY (a trigger
on `commands`, migration 0006_cluster; delivered only when that transaction commits) whose
payload is the meter_id. Every member listens on one asyncpg connection of its own and hands
the meter to `on_command`; the member holding the meter starts on it at once instead of at
its next scan. A notification lost while the connection was down costs only that delay: the
relay controller's scan still finds every due command."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

__all__ = ["CHANNEL", "CommandListener", "asyncpg_dsn"]

log = logging.getLogger(__name__)

CHANNEL = "headend_command"


def asyncpg_dsn(url: str) -> str:
    """The plain libpq URL asyncpg takes, from a postgresql+asyncpg SQLAlchemy URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _set(event: asyncio.Event, _conn: Any) -> None:
    event.set()


class CommandListener:
    def __init__(
        self,
        url: str,
        on_command: Callable[[str], None],
        *,
        timeout_s: float = 10.0,
        backoff_max_s: float = 10.0,
    ) -> None:
        self._dsn = asyncpg_dsn(url)
        self._on_command = on_command
        self._timeout_s = timeout_s
        self._backoff_max_s = backoff_max_s
        self.received = 0
        self.connected = asyncio.Event()

    def __repr__(self) -> str:
        return f"CommandListener(received={self.received})"

    async def run(self) -> None:
        """Listen until cancelled, reconnecting with backoff."""
        failures = 0
        while True:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self._dsn, timeout=self._timeout_s)
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                failures += 1
                delay = min(self._backoff_max_s, 0.5 * 2**failures)
                log.warning("cluster: LISTEN connection failed (%s); again in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            try:
                conn.add_termination_listener(functools.partial(_set, lost))
                await asyncio.wait_for(conn.add_listener(CHANNEL, self._notified), self._timeout_s)
                failures = 0
                self.connected.set()
                await lost.wait()
                log.warning("cluster: LISTEN connection lost; reconnecting")
            finally:
                self.connected.clear()
                if not conn.is_closed():
                    try:
                        await asyncio.wait_for(conn.close(), self._timeout_s)
                    except (OSError, TimeoutError, asyncpg.PostgresError):
                        conn.terminate()

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self.received += 1
        try:
            self._on_command(payload)
        except Exception:
            log.exception("cluster: wake-up for %s failed", payload[:64])
