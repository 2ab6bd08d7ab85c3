"""An embedded MQTT broker (amqtt) for the demo, single-box installs and tests.

amqtt 0.11.3 is good enough for one head-end and a handful of integrators on the same box, but it
is not Mosquitto. What matters for the bridge (checked in tests/test_mqtt_broker.py):

- With its stock ``AnonymousAuthPlugin`` every session is flagged anonymous, and amqtt neither
  queues QoS 1 messages for a disconnected anonymous session nor keeps its subscriptions. We load
  our own ``OpenAuthPlugin`` instead: anyone may connect, and a ``clean_session=False`` session
  keeps its subscriptions and its offline queue (in memory only: a broker restart forgets them).
- A QoS 1 message sent to a client that does not PUBACK it is forgotten when that client
  disconnects, or after five seconds: amqtt does not redeliver unacknowledged messages on
  reconnect (MQTT-4.4.0-1). Acknowledge-after-commit therefore protects against losing an event
  only on a real broker (Mosquitto); on the embedded one the head-end still never acks an event
  it has not stored, but the broker will not offer it again.
- Messages queued for an offline session are delivered with the retain flag set.
- On reconnection of a persistent session amqtt sends retained messages for every topic filter
  any client subscribed to, not only the session's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from amqtt.broker import Broker
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

__all__ = ["EmbeddedBroker", "OpenAuthPlugin", "embedded_broker", "free_port"]

_NOISY_LOGGERS = ("amqtt", "transitions")
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1"}
_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10.0


class OpenAuthPlugin(BaseAuthPlugin):
    """Lets every client in without marking its session anonymous, so persistent sessions work."""

    @dataclass
    class Config:
        pass

    async def authenticate(self, *, session: Session) -> bool | None:
        return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the OS may hand it out again, so use it at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def silence_amqtt_logging(level: int = logging.CRITICAL) -> None:
    """amqtt logs ordinary client departures as warnings and tracebacks; keep them out of ours."""
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(level)


def _broker_config(host: str, port: int) -> dict[str, Any]:
    return {
        "listeners": {
            "default": {"type": "tcp", "bind": f"{host}:{port}", "max_connections": 0},
        },
        "plugins": {f"{OpenAuthPlugin.__module__}.{OpenAuthPlugin.__qualname__}": {}},
    }


class EmbeddedBroker:
    """An amqtt broker on one fixed port that can be stopped and started again on that port.

    Restarting is what tests use to take the broker away from a connected bridge; sessions and
    retained messages do not survive a restart.
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host  # where it listens: loopback unless an installation says otherwise
        self.port = port if port else free_port(host)
        self._broker: Broker | None = None

    @property
    def local_address(self) -> str:
        """Where a client on this box reaches it (a wildcard listener is reached on loopback)."""
        return _LOOPBACK.get(self.host, self.host)

    @property
    def running(self) -> bool:
        return self._broker is not None

    async def start(self) -> None:
        if self._broker is not None:
            return
        silence_amqtt_logging()
        broker = Broker(_broker_config(self.host, self.port))
        async with asyncio.timeout(_START_TIMEOUT_S):
            await broker.start()
        self._broker = broker

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is None:
            return
        try:
            async with asyncio.timeout(_STOP_TIMEOUT_S):
                await broker.shutdown()
        except asyncio.CancelledError:
            # amqtt's shutdown lets the cancellation of its own pending deliveries escape;
            # swallow that, but not a cancellation aimed at us.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
        except Exception:  # a broker that fails to stop is stopped enough
            logging.getLogger(__name__).debug("embedded broker shutdown failed", exc_info=True)
        # amqtt cancels its session monitor without waiting for it; let it finish, or a loop
        # that closes right after reports "Task was destroyed but it is pending".
        monitor = getattr(broker, "_session_monitor_task", None)
        if isinstance(monitor, asyncio.Task) and not monitor.done():
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                async with asyncio.timeout(1):
                    await asyncio.wait({monitor})

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


@contextlib.asynccontextmanager
async def embedded_broker(
    port: int | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[tuple[str, int]]:
    """Run a broker for the duration of the block; yields where to connect.

    ``port=None`` (or 0) picks a free port.
    """
    broker = EmbeddedBroker(host, port)
    async with broker:
        yield broker.host, broker.port
