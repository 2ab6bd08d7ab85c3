"""One meter while the fleet runs: what the TCP servers and serial lines share about it.

Per-connection state (readers, HDLC links, sessions, fault dice) lives in small objects that
exist only while a client is connected; a `MeterRuntime` itself holds no buffers, no tasks and no
timers, so ten thousand idle meters cost little."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from drivers.hdlc import (
    ApduReceived,
    Connected,
    Disconnected,
    HdlcAddress,
    HdlcEvent,
    HdlcServerConnection,
    SendFrame,
)
from simulators.association import ServerSession
from simulators.config import Faults, MeterConfig
from simulators.faults_runtime import (
    FaultDice,
    FleetClock,
    Verdict,
    corrupt_hdlc_frame,
    is_offline,
)
from simulators.meter import SimMeter

# What the meter offers in its UA; the client's SNRM can only lower it.
HDLC_MAX_INFO = 512
HDLC_WINDOW = 1


class MeterRuntime:
    __slots__ = (
        "clock",
        "config",
        "connections",
        "live",
        "max_open_sessions",
        "meter",
        "open_connections",
        "open_sessions",
        "sessions",
    )

    def __init__(
        self,
        config: MeterConfig,
        meter: SimMeter,
        clock: FleetClock,
        live: set[asyncio.Transport] | None = None,
    ) -> None:
        self.config = config
        # The fleet's open client transports (shared by all meters), closed on stop.
        self.live: set[asyncio.Transport] = live if live is not None else set()
        self.meter = meter
        self.clock = clock
        self.connections = 0  # ever accepted
        self.open_connections = 0
        # Associations (sessions): ever opened, open now, most open at the same time. A meter
        # that saw two at once had two clients in it together (the cluster tests look).
        self.sessions = 0
        self.open_sessions = 0
        self.max_open_sessions = 0

    def session_opened(self) -> None:
        self.sessions += 1
        self.open_sessions += 1
        self.max_open_sessions = max(self.max_open_sessions, self.open_sessions)

    def session_closed(self) -> None:
        self.open_sessions -= 1

    @property
    def faults(self) -> Faults:
        return self.config.faults

    def offline(self) -> bool:
        return is_offline(self.config.faults, self.clock.uptime())

    def new_session(self, client_sap: int) -> ServerSession:
        return ServerSession(self.meter, client_sap)

    def new_hdlc_link(self) -> HdlcServerConnection:
        address = HdlcAddress.server(self.config.server_logical, self.config.server_physical)
        return HdlcServerConnection(
            address, max_info_rx=HDLC_MAX_INFO, max_info_tx=HDLC_MAX_INFO, window=HDLC_WINDOW
        )

    def open_exchange(self) -> Exchange:
        self.connections += 1
        self.open_connections += 1
        return Exchange(self, self.connections)


class Exchange:
    """Fault decisions and the session for one client connection (or one HDLC link)."""

    __slots__ = (
        "_dice",
        "answered",
        "client_sap",
        "closed",
        "counted",
        "number",
        "runtime",
        "session",
    )

    def __init__(self, runtime: MeterRuntime, number: int) -> None:
        self.runtime = runtime
        self.number = number
        self.session: ServerSession | None = None
        self.client_sap = -1
        self.answered = 0
        self.closed = False
        self.counted = False  # this exchange's association is counted as open
        self._dice: FaultDice | None = None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.runtime.open_connections -= 1
        self._count(False)

    def _count(self, associated: bool) -> None:
        if associated != self.counted:
            self.counted = associated
            if associated:
                self.runtime.session_opened()
            else:
                self.runtime.session_closed()

    @property
    def dice(self) -> FaultDice:
        if self._dice is None:  # only connections that meet a random fault pay for the RNG
            config = self.runtime.config
            self._dice = FaultDice(config.seed, config.index, self.number)
        return self._dice

    def delay(self) -> float:
        faults = self.runtime.config.faults
        if faults.latency_ms <= 0 and faults.jitter_ms <= 0:
            return 0.0
        return self.dice.delay(faults)

    def answer(self, client_sap: int, apdu: bytes) -> tuple[bytes | None, bool]:
        """(reply, close_instead): run the request through the meter, then the close fault.

        The meter acts on the request before the fault strikes: a relay operation whose answer
        is lost has still happened, which is what a head-end must cope with."""
        session = self.session
        if session is None or self.client_sap != client_sap:
            session = self.session = self.runtime.new_session(client_sap)
            self.client_sap = client_sap
        reply = session.handle_apdu(apdu)
        self._count(session.in_association)
        faults = self.runtime.config.faults
        close = faults.close_mid_session_rate > 0 and self.dice.close_now(
            faults, mid_session=self.answered > 0
        )
        if reply is not None:
            self.answered += 1
        return reply, close

    def reset_session(self) -> None:
        self._count(False)
        self.session = None
        self.client_sap = -1

    def frame_fate(self) -> Verdict:
        """Drop or corrupt for one outgoing frame (an HDLC I frame or a wrapper PDU)."""
        faults = self.runtime.config.faults
        if faults.drop_rate <= 0 and faults.corrupt_rate <= 0:
            return Verdict.SEND
        return self.dice.frame_fate(faults)


def drive_hdlc(
    exchange: Exchange, link: HdlcServerConnection, events: list[HdlcEvent]
) -> tuple[list[bytes], bool]:
    """Frames to write for what `link` reported, and whether to cut the link instead.

    A new SNRM or a DISC ends any association, as on a real meter. Drop and corrupt faults hit
    I frames only (the link handshake stays reliable), so HDLC retransmission can recover from a
    lost answer when the client polls again, exactly as on a noisy line."""
    out: list[bytes] = []
    for event in events:
        if isinstance(event, SendFrame):
            out.append(event.data)
        elif isinstance(event, ApduReceived):
            reply, close = exchange.answer(link.peer.upper, event.apdu)
            if close:
                return _apply_fates(exchange, out), True
            if reply is not None:
                out.extend(link.send_apdu(reply))
        elif isinstance(event, Connected | Disconnected):
            exchange.reset_session()
    return _apply_fates(exchange, out), False


def _apply_fates(exchange: Exchange, frames: list[bytes]) -> list[bytes]:
    kept = []
    for frame in frames:
        if is_i_frame(frame):
            fate = exchange.frame_fate()
            if fate is Verdict.DROP:
                continue
            if fate is Verdict.CORRUPT:
                frame = corrupt_hdlc_frame(frame)
        kept.append(frame)
    return kept


def is_i_frame(frame: bytes) -> bool:
    """Whether an encoded frame (flags included) is an I frame: control byte bit 0 clear."""
    pos = 3
    for _ in range(2):  # destination, then source address
        while pos < len(frame) and not frame[pos] & 1:
            pos += 1
        pos += 1
    return pos < len(frame) and not frame[pos] & 1


def call_soon_or_later(
    loop: asyncio.AbstractEventLoop, when: float, callback: Callable[[], None]
) -> asyncio.Handle | None:
    """Run now if `when` (loop time) has come, else schedule; keeps the common path cheap."""
    if when <= loop.time():
        callback()
        return None
    return loop.call_at(when, callback)
