"""The listener as a part of `headend run` (and alone, for `headend listen`): the push
handler, the sockets, the directory kept in step with the inventory, push object lists read
from the meters, and inbound meters' due work, assembled from the daemon's own parts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from cosem_objects.errors import ProtocolError
from drivers.dlms_errors import DlmsError
from headend.config import ListenerConfig
from headend.listener.directory import Directory
from headend.listener.guard import Guard
from headend.listener.handler import PushHandler
from headend.listener.inbound import InboundWork, PollWork, RelayWork
from headend.listener.mapping import PushObject, parse_object_list
from headend.listener.objects import PushObjectLists
from headend.listener.server import Listener, OnAccepted
from headend.meters.access import MeterAccess
from headend.meters.line_locks import POLL
from headend.mqtt.notifier import Notifier
from headend.storage import Repository

__all__ = ["ListenerService", "listener_ports"]

log = logging.getLogger(__name__)

PUSH_SETUP_CLASS = 40
PUSH_OBJECT_LIST = 2


def listener_ports(config: ListenerConfig) -> tuple[int | None, int | None]:
    """The configured ports, None where off (0 in the configuration)."""
    return (config.tcp_port or None, config.udp_port or None)


class ListenerService:
    def __init__(
        self,
        access: MeterAccess,
        repository: Repository | None,
        notifier: Notifier | None,
        *,
        host: str,
        tcp_port: int | None,
        udp_port: int | None,
        relay: RelayWork | None = None,
        collection: PollWork | None = None,
        refresh_s: float = 60.0,
        on_accepted: OnAccepted | None = None,
        read_object_lists: bool = True,
        show_unknown: bool = False,
        **listener_options: Any,
    ) -> None:
        self.access = access
        self.refresh_s = refresh_s
        self.directory = Directory()
        self.objects = PushObjectLists(self._read_object_list if read_object_lists else None)
        self.handler = PushHandler(
            repository,
            notifier,
            self.directory,
            objects=self.objects,
            guard=Guard(),
            on_address_changed=self._moved,
            show_unknown=show_unknown,
        )
        self.inbound = InboundWork(
            access.inbound, relay=relay, collection=collection, then=self.handler.complete
        )
        self.listener = Listener(
            self.handler,
            host=host,
            tcp_port=tcp_port,
            udp_port=udp_port,
            on_identified=self.inbound,
            on_accepted=on_accepted,
            **listener_options,
        )

    def __repr__(self) -> str:
        return f"ListenerService({self.listener!r}, {self.handler!r})"

    def stop(self) -> None:
        self.listener.stop()

    async def run(self) -> None:
        try:
            self.directory.update(await self.access.refresh())
        except Exception as exc:  # the daemon checked at start; `headend listen` goes on
            log.error("listener: inventory not read (%s); plain pushes only until it is", exc)
        async with asyncio.TaskGroup() as tg:
            refresher = tg.create_task(self._refresh(), name="listener-directory")
            writer = self.handler.writer
            storing = None if writer is None else tg.create_task(writer.run(), name="push-writer")
            try:
                await self.listener.run()
            finally:
                refresher.cancel()
                if storing is not None:
                    storing.cancel()

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            with contextlib.suppress(Exception):
                self.directory.update(await self.access.refresh())

    def _moved(self, meter_id: str) -> None:
        self.access.forget(meter_id)

    async def _read_object_list(self, meter_id: str, setup: str) -> list[PushObject] | None:
        """Push setup attribute 2, over an ordinary session, or for an inbound meter over its
        own connection while the listener lends it (inbound.py)."""
        record = await self.access.record(meter_id)
        if record is None:
            return None
        if record.transport == "inbound" and not self.access.inbound.connected(meter_id):
            return None
        try:
            async with self.access.session(record, POLL) as session:
                value = await session.get(PUSH_SETUP_CLASS, setup, PUSH_OBJECT_LIST)
            return parse_object_list(value)
        except (OSError, TimeoutError, ProtocolError, DlmsError) as exc:
            log.info("push object list of %s not read: %s", meter_id, exc)
            return None
