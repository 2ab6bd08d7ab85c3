"""Due work over an inbound meter's own connection (IDIS "always on", meters behind NAT).

When a meter whose inventory transport is `inbound` has proved who it is on a connection
(its push verified), the listener lends that connection to MeterAccess (InboundLinks) and
runs what is due for the meter, in order: its pending relay command (whatever its backoff:
this may be the only chance for a while), then a poll if one is due or came due while it was
away; last, pushes that waited for the meter's push object list are mapped with it, read
over the same connection. Sessions take the meter's line lock as any session does, so
nothing else talks to it meanwhile. Then the connection goes back to the listener, with
whatever the meter pushed in the middle of the session, and the listener reads on until the
meter hangs up.

The wrapper connection is lent as it is (drivers/transports/accepted.py); over HDLC the
head-end sets up a link (SNRM) on it and disconnects (DISC) before giving it back."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from drivers.connect import MeterConnection
from drivers.transports.accepted import AcceptedHdlcTransport, AcceptedWrapperTransport
from drivers.transports.base import ApduTransport
from drivers.transports.stream import ByteStream
from drivers.wrapper import WrapperFrame
from headend.listener.framing import HDLC, WRAPPER, InboundApdu, StreamFraming
from headend.listener.handler import Peer
from headend.meters.inbound_links import InboundLinks

__all__ = ["InboundWork"]

log = logging.getLogger(__name__)

MAX_PUSHED = 64
"""Pushes kept that the meter sent in the middle of a session (handled after it)."""


class RelayWork(Protocol):
    async def work_now(self, meter_id: str) -> None: ...


class PollWork(Protocol):
    async def poll_now(self, meter_id: str) -> bool: ...


class InboundWork:
    def __init__(
        self,
        links: InboundLinks,
        *,
        relay: RelayWork | None = None,
        collection: PollWork | None = None,
        then: Callable[[Peer], Awaitable[None]] | None = None,
        budget_s: float = 300.0,
        link_timeout_s: float = 10.0,
    ) -> None:
        self.links = links
        self.then = then  # last, with the link still lent: pushes that waited for it
        self.relay = relay
        self.collection = collection
        self.budget_s = budget_s
        self.link_timeout_s = link_timeout_s  # an HDLC link's frames (SNRM, I, DISC)
        self.sessions = 0

    def __repr__(self) -> str:
        return f"InboundWork(sessions={self.sessions}, {self.links!r})"

    def open_call(self, peer: Peer, framing: StreamFraming) -> asyncio.Event | None:
        """An inbound meter's call stays open: the event that asks for it to be lent again."""
        meter = peer.known
        if meter is None or meter.transport != "inbound" or framing.layer is None:
            return None
        return self.links.open_call(meter.meter_id)

    def close_call(self, peer: Peer, wake: asyncio.Event) -> None:
        if peer.known is not None:
            self.links.close_call(peer.known.meter_id, wake)

    async def __call__(
        self, peer: Peer, stream: ByteStream, framing: StreamFraming
    ) -> list[InboundApdu]:
        meter = peer.known
        if meter is None or meter.transport != "inbound" or framing.layer is None:
            return []
        connection_timeout = self.link_timeout_s
        pushed: list[InboundApdu] = []

        def other(frame: WrapperFrame) -> None:
            if len(pushed) < MAX_PUSHED:  # a meter babbling during the session loses the rest
                pushed.append(InboundApdu(frame.apdu, WRAPPER, frame.src_wport, frame.dst_wport))

        def other_ui(apdu: bytes) -> None:
            if len(pushed) < MAX_PUSHED:
                pushed.append(InboundApdu(apdu, HDLC, meter.server_logical, 0))

        def make(connection: MeterConnection) -> ApduTransport:
            if framing.layer == HDLC:
                return AcceptedHdlcTransport(
                    stream,
                    on_other=other_ui,
                    client_sap=connection.client_sap,
                    server_logical=connection.server_logical,
                    server_physical=connection.server_physical,
                    timeout=connection_timeout,
                )
            assert framing.wrapper is not None
            return AcceptedWrapperTransport(
                stream,
                reader=framing.wrapper,
                client_wport=connection.client_sap,
                server_wport=connection.server_logical,
                on_other=other,
            )

        meter_id = meter.meter_id
        self.links.register(meter_id, make)
        self.sessions += 1
        try:
            async with asyncio.timeout(self.budget_s):
                if self.relay is not None:
                    await self.relay.work_now(meter_id)
                if self.collection is not None:
                    await self.collection.poll_now(meter_id)
                if self.then is not None:
                    await self.then(peer)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("work over the connection of %s failed", meter_id)
        finally:
            self.links.unregister(meter_id, make)
        return pushed
