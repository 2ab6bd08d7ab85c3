"""systemd's service notifications (Type=notify): READY=1 once the daemon serves, WATCHDOG=1
while its /healthz answers, STOPPING=1 on the way out (docs/deploy/headend.service).

The watchdog ping is sent only after a real GET of the daemon's own /healthz came back 200,
over TCP like any probe's: a wedged event loop, or an endpoint that no longer answers, stops
the pings and systemd restarts the service after WatchdogSec, which is what a watchdog on
/healthz means. Without a metrics port the ping follows the event loop alone.

The protocol is one datagram of text to the unix socket named in $NOTIFY_SOCKET (an abstract
one when it starts with '@'); the libraries that wrap it are either bindings to libsystemd
(a C dependency for one sendto) or unmaintained, so it is written out here. Nothing is sent
when $NOTIFY_SOCKET is unset: outside systemd this is a no-op."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Mapping
from types import TracebackType

from headend.observability.logs import get_logger

__all__ = ["HEALTH_TIMEOUT_S", "SystemdNotifier", "notify"]

log = get_logger(__name__)

HEALTH_TIMEOUT_S = 5.0


def notify(environ: Mapping[str, str], message: str) -> bool:
    """Send `message` (e.g. "READY=1") to systemd; False when not under systemd."""
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    target = "\0" + address[1:] if address.startswith("@") else address
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        try:
            sock.sendto(message.encode(), target)
        except OSError as exc:
            log.warning("systemd notification %r not sent: %s", message.split("=")[0], exc)
            return False
    return True


def watchdog_interval_s(environ: Mapping[str, str]) -> float | None:
    """Half of WatchdogSec (systemd's advice), if the watchdog is on and meant for us."""
    usec = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(0.05, int(usec) / 2_000_000)
    except ValueError:
        return None


async def healthz_ok(host: str, port: int) -> bool:
    """GET /healthz over TCP, as a probe would; True on a 200."""
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(
                    b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                )
                await writer.drain()
                status_line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError):
        return False
    return status_line.split(b" ")[1:2] == [b"200"]


class SystemdNotifier:
    """`async with SystemdNotifier(environ, ready, health=(host, port) or None):` around the
    daemon's life."""

    def __init__(
        self,
        environ: Mapping[str, str],
        ready: asyncio.Event,
        *,
        health: tuple[str, int] | None = None,
        status: str = "serving",
    ) -> None:
        self.environ = environ
        self.ready = ready
        self.health = health
        self.status = status
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"SystemdNotifier(socket={bool(self.environ.get('NOTIFY_SOCKET'))})"

    async def __aenter__(self) -> SystemdNotifier:
        if self.environ.get("NOTIFY_SOCKET"):
            self._task = asyncio.create_task(self._run(), name="systemd-notify")
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        notify(self.environ, "STOPPING=1")

    async def _run(self) -> None:
        await self.ready.wait()
        notify(self.environ, f"READY=1\nSTATUS={self.status}")
        every = watchdog_interval_s(self.environ)
        if every is None:
            return
        while True:
            if self.health is None or await healthz_ok(*self.health):
                notify(self.environ, "WATCHDOG=1")
            else:
                log.warning("/healthz did not answer: no watchdog ping")
            await asyncio.sleep(every)
