"""The edge that sends a simulated meter's pushes (`dlms-sim --push-to`).

Each meter with a push destination runs one agent: an interval push every `interval_s`, an
event push for every event its logs record (relay operations, power failure, cover), and,
with `inbound_only`, a connection to the push address kept open (re-opened a moment after it
is lost). TCP and HDLC pushes go over one connection the meter opens and keeps; the same
server protocols that answer on a listening socket (simulators/servers.py) answer the
head-end's requests on it, so a head-end may associate and read over the meter's own call.
UDP pushes are wrapper datagrams. A push that cannot be delivered is tried `retries` more
times, `repetition_delay_s` apart, then counted as failed; nothing here raises out of `run`
but cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from simulators.config import PushSpec
from simulators.event_logs import MeterEvent
from simulators.meter_runtime import MeterRuntime
from simulators.objects.push_setup import PUSH_SETUP_DEF, PushSetupDef
from simulators.push_messages import hdlc_push, push_apdu, wrapper_push
from simulators.servers import DEFAULT_IDLE_TIMEOUT_S, HdlcMeterProtocol, WrapperMeterProtocol

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
RECONNECT_DELAY_S = 1.0
EVENT_QUEUE = 64  # events waiting to be pushed; the oldest give way (they stay in the logs)


class _PushWrapper(WrapperMeterProtocol):
    """The wrapper server protocol on a connection the meter opened; knows when it is lost."""

    def __init__(self, runtime: MeterRuntime, idle_timeout_s: float) -> None:
        super().__init__(runtime, idle_timeout_s)
        self.lost: asyncio.Future[None] = self._loop.create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.lost.done():
            self.lost.set_result(None)


class _PushHdlc(HdlcMeterProtocol):
    """The HDLC server protocol on a connection the meter opened; knows when it is lost."""

    def __init__(self, runtime: MeterRuntime, idle_timeout_s: float) -> None:
        super().__init__(runtime, idle_timeout_s)
        self.lost: asyncio.Future[None] = self._loop.create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.lost.done():
            self.lost.set_result(None)


class PushAgent:
    """Pushes of one meter. `sent` and `failed` count pushes (not frames)."""

    def __init__(
        self,
        runtime: MeterRuntime,
        spec: PushSpec,
        *,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
    ) -> None:
        self.runtime = runtime
        self.spec = spec
        self.idle_timeout_s = idle_timeout_s
        self.sent = 0
        self.failed = 0
        self.connections = 0
        self._invoke_id = 0
        self._events: asyncio.Queue[MeterEvent] = asyncio.Queue(EVENT_QUEUE)
        self._conn: _PushWrapper | _PushHdlc | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._connect_lock = asyncio.Lock()
        self._push_now = asyncio.Event()
        # From now on (not from when `run` first runs): an event logged at once is not lost.
        runtime.meter.events.sink = self._on_event
        runtime.meter.push_trigger = self._push_now.set

    # -- life ------------------------------------------------------------------------------------
    async def run(self) -> None:
        meter = self.runtime.meter
        try:
            async with asyncio.TaskGroup() as tasks:
                if self.spec.interval_s > 0:
                    tasks.create_task(self._interval_pushes())
                tasks.create_task(self._event_pushes())
                tasks.create_task(self._asked_pushes())
                if self.spec.inbound_only:
                    tasks.create_task(self._keep_connected())
        finally:
            meter.events.sink = None
            meter.push_trigger = None
            self.close()

    def close(self) -> None:
        if self._conn is not None and self._conn.transport is not None:
            self._conn.transport.abort()
        self._conn = None
        if self._udp is not None:
            self._udp.close()
            self._udp = None

    def _on_event(self, event: MeterEvent) -> None:
        """Called by the meter as it logs an event (in the event loop's thread)."""
        if self._events.full():
            self._events.get_nowait()
        self._events.put_nowait(event)

    async def _interval_pushes(self) -> None:
        while True:
            await asyncio.sleep(self.spec.interval_s)
            if not self.runtime.offline():
                await self.push(PUSH_SETUP_DEF)

    async def _asked_pushes(self) -> None:
        """Pushes asked for by the Push setup's method 1 (one per ask, asks coalesce)."""
        while True:
            await self._push_now.wait()
            self._push_now.clear()
            await self.push(PUSH_SETUP_DEF)

    async def _event_pushes(self) -> None:
        while True:
            event = await self._events.get()
            await self.push(PUSH_SETUP_DEF, event)

    async def _keep_connected(self) -> None:
        while True:
            if not self.runtime.offline():
                try:
                    connection = await self._connection()
                except OSError as exc:
                    log.debug("meter %s: push address unreachable: %s", self._meter_id, exc)
                else:
                    await connection.lost
            await asyncio.sleep(RECONNECT_DELAY_S)

    @property
    def _meter_id(self) -> str:
        return self.runtime.config.meter_id

    # -- sending ---------------------------------------------------------------------------------
    async def push(self, setup: PushSetupDef, event: MeterEvent | None = None) -> bool:
        """Send one push now, with the Push setup's retries; False when it never got out."""
        for attempt in range(self.spec.retries + 1):
            try:
                await self._send(setup, event)
            except OSError as exc:
                log.debug("meter %s: push attempt %d failed: %s", self._meter_id, attempt, exc)
                if attempt < self.spec.retries:
                    await asyncio.sleep(self.spec.repetition_delay_s)
            except Exception:  # a bug must not stop the meter's other pushes
                log.exception("meter %s: push failed", self._meter_id)
                break
            else:
                self.sent += 1
                return True
        self.failed += 1
        return False

    async def _send(self, setup: PushSetupDef, event: MeterEvent | None) -> None:
        config = self.runtime.config
        spec = self.spec
        if spec.transport == "udp":
            udp = await self._datagrams()
            self._invoke_id += 1
            udp.sendto(
                wrapper_push(config, push_apdu(self.runtime.meter, setup, self._invoke_id, event))
            )
            return
        connection = await self._connection()
        transport = connection.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("push connection closed")
        self._invoke_id += 1
        apdu = push_apdu(self.runtime.meter, setup, self._invoke_id, event)
        if isinstance(connection, _PushHdlc):
            link = connection.link
            max_info = link.params.max_info_tx if link.connected else spec.hdlc_max_info
            transport.write(b"".join(hdlc_push(config, apdu, max_info)))
        else:
            transport.write(wrapper_push(config, apdu))

    async def _connection(self) -> _PushWrapper | _PushHdlc:
        async with self._connect_lock:
            current = self._conn
            if current is not None and not current.lost.done():
                return current
            loop = asyncio.get_running_loop()
            factory = _PushHdlc if self.spec.transport == "hdlc" else _PushWrapper
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    _, protocol = await loop.create_connection(
                        lambda: factory(self.runtime, self.idle_timeout_s),
                        self.spec.host,
                        self.spec.port,
                    )
            except TimeoutError:
                raise ConnectionRefusedError(
                    f"connecting to {self.spec.destination} timed out"
                ) from None
            self._conn = protocol
            self.connections += 1
            return protocol

    async def _datagrams(self) -> asyncio.DatagramTransport:
        if self._udp is None or self._udp.is_closing():
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                self._udp, _ = await loop.create_datagram_endpoint(
                    asyncio.DatagramProtocol, remote_addr=(self.spec.host, self.spec.port)
                )
        return self._udp


async def run_push_agents(agents: Sequence[PushAgent]) -> None:
    """Every agent until cancelled (the fleet cancels this when it stops)."""
    async with asyncio.TaskGroup() as tasks:
        for agent in agents:
            tasks.create_task(agent.run())


def start_push_agents(agents: Sequence[PushAgent]) -> asyncio.Task[None] | None:
    if not agents:
        return None
    return asyncio.get_running_loop().create_task(run_push_agents(agents))


async def stop_push_agents(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
