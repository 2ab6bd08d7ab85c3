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

Only the wrapper is lent; an inbound meter speaking HDLC is served pushes only."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from drivers.connect import MeterConnection
from drivers.transports.accepted import AcceptedWrapperTransport
from drivers.transports.base import ApduTransport
from drivers.transports.stream import ByteStream
from drivers.wrapper import WrapperFrame
from headend.listener.framing import WRAPPER, InboundApdu, StreamFraming
from headend.listener.handler import Peer
from headend.meters.inbound_links import InboundLinks

__all__ = ["InboundWork"]

log = logging.getLogger(__name__)


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
    ) -> None:
        self.links = links
        self.then = then  # last, with the link still lent: pushes that waited for it
        self.relay = relay
        self.collection = collection
        self.budget_s = budget_s
        self.sessions = 0

    def __repr__(self) -> str:
        return f"InboundWork(sessions={self.sessions}, {self.links!r})"

    async def __call__(
        self, peer: Peer, stream: ByteStream, framing: StreamFraming
    ) -> list[InboundApdu]:
        meter = peer.known
        if meter is None or meter.transport != "inbound":
            return []
        if framing.layer != WRAPPER or framing.wrapper is None:
            log.info("inbound meter %s speaks HDLC: pushes only", meter.meter_id)
            return []
        pushed: list[InboundApdu] = []

        def other(frame: WrapperFrame) -> None:
            if len(pushed) < 64:  # bounded: a meter babbling during the session loses the rest
                pushed.append(InboundApdu(frame.apdu, WRAPPER, frame.src_wport, frame.dst_wport))

        def make(connection: MeterConnection) -> ApduTransport:
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
