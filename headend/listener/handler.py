"""What a push does: readings and events stored and published, alarms raised, the relay state
and the meter's address brought up to date; and what a bad push does: nothing but a count, a
log line and (once per sender and window) an alarm.

One push is one unit of work (storage/unit.py): its readings, events, alarms, relay state and
the messages that report them commit together. The counter of a ciphered push is checked and
stored in that same transaction, so a replay rolls it all back and nothing is written
(storage/push_counters.py decides, atomically)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cosem_objects import event_codes
from cosem_objects.apdu.gbt import GENERAL_BLOCK_TRANSFER, GbtReassembler, GeneralBlockTransfer
from cosem_objects.data import DataType
from cosem_objects.errors import ProtocolError
from headend import domain
from headend.listener.batching import PushWriter
from headend.listener.directory import Directory, KnownMeter
from headend.listener.framing import InboundApdu
from headend.listener.guard import Guard
from headend.listener.mapping import PushContent, PushObject, map_notification, setup_of
from headend.listener.objects import PUSH_SETUP, PushObjectLists
from headend.listener.unwrap import (
    BAD_TAG,
    MALFORMED,
    UNKNOWN_SENDER,
    Notification,
    Opened,
    Rejected,
    open_apdu,
)
from headend.meters.event_effects import power_failure_effect
from headend.mqtt.notifier import Notifier
from headend.observability import metrics
from headend.storage import Repository
from headend.storage.events import EventRow
from headend.storage.records import ReadingRow

__all__ = ["Accepted", "Peer", "PushHandler"]

log = logging.getLogger(__name__)

REPLAY = "replay"
UNKNOWN = "?"  # the meter id shown for a plain push from no meter of the inventory
_ALARMS = {
    MALFORMED: domain.PUSH_MALFORMED,
    UNKNOWN_SENDER: domain.PUSH_UNKNOWN_SENDER,
    BAD_TAG: domain.PUSH_BAD_TAG,
    REPLAY: domain.PUSH_REPLAY,
}
MAX_GBT = 16 * 1024  # a push in blocks; with framing.py, ~40 KiB per sender at worst
MAX_WAITING = 16
MAX_LATER = 1024
"""Datagram pushes waiting at once for their meter's object list (more are mapped inline)."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _Replay(Exception):
    """A ciphered push's counter is not above the last one accepted: nothing is stored."""


@dataclass(slots=True)
class Peer:
    """One TCP connection or one UDP sender: where it came from, who it proved to be, and the
    blocks of a push being joined (bounded by MAX_GBT)."""

    host: str
    transport: str  # "tcp" | "udp"
    known: KnownMeter | None = None
    gbt: GbtReassembler = field(default_factory=lambda: GbtReassembler(MAX_GBT))
    waiting: list[tuple[KnownMeter, Opened]] = field(default_factory=list)
    """An inbound meter's pushes that wait for its push object list (read once the
    connection is lent out: inbound.py); at most MAX_WAITING."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """A push taken: whose, what it said (for `headend listen` to print), what was new."""

    meter_id: str
    notification: Notification
    content: PushContent
    ciphered: bool
    new_readings: int
    new_events: list[EventRow]


class PushHandler:
    def __init__(
        self,
        repository: Repository | None,
        notifier: Notifier | None,
        directory: Directory,
        *,
        objects: PushObjectLists | None = None,
        guard: Guard | None = None,
        clock: Callable[[], dt.datetime] = _now,
        on_address_changed: Callable[[str], None] | None = None,
        show_unknown: bool = False,
        writer: PushWriter | None = None,
    ) -> None:
        self.repository = repository
        self.notifier = notifier
        self.directory = directory
        self.objects = objects or PushObjectLists()
        self.guard = guard or Guard()
        self._clock = clock
        self.on_address_changed = on_address_changed
        self.writer = writer or (None if repository is None else PushWriter(repository.db))
        self.show_unknown = show_unknown  # `headend listen`: a plain push from anyone is shown
        self.accepted = 0
        self.on_accepted: Callable[[Accepted], None] | None = None
        self._later: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"PushHandler(accepted={self.accepted}, {self.guard!r})"

    # -- bad input ---------------------------------------------------------------------------
    async def reject(
        self,
        kind: str,
        peer: Peer,
        reason: str,
        meter: KnownMeter | None = None,
        system_title: bytes | None = None,
    ) -> None:
        """Count, log and (once per sender and window) alarm; never raises."""
        sender = (
            meter.meter_id
            if meter is not None
            else system_title.hex()
            if system_title
            else peer.host
        )
        metrics.PUSH_MESSAGES.labels(outcome=kind.removeprefix("push_")).inc()
        alarm_now = self.guard.report(kind, sender)
        # A flood of forged pushes must not flood the log either: one warning per alarm.
        log.log(
            logging.WARNING if alarm_now else logging.DEBUG,
            "push refused (%s) from %s (%s): %s",
            kind,
            peer.host,
            sender,
            reason,
        )
        if not alarm_now or self.repository is None:
            return
        detail: dict[str, Any] = {"reason": reason, "from": peer.host, "transport": peer.transport}
        if system_title is not None:
            detail["system_title"] = system_title.hex()
        try:
            async with self.repository.db.transaction():
                alarm = await self.repository.raise_alarm(
                    _ALARMS[kind],
                    meter.meter_id if meter is not None else None,
                    _detail_text(detail),
                    dedupe=False,
                )
                if self.notifier is not None and alarm is not None:
                    self.notifier.alarm(
                        alarm.type, alarm.ts, meter_id=alarm.meter_id, detail=detail
                    )
        except Exception:
            log.exception("recording a refused push failed")

    # -- a push ------------------------------------------------------------------------------
    async def handle(self, event: InboundApdu, peer: Peer) -> Accepted | None:
        """One APDU from `peer`: None when it was a block of a longer one, or refused."""
        apdu = event.apdu
        if apdu[:1] == bytes((GENERAL_BLOCK_TRANSFER,)):
            try:
                whole = peer.gbt.feed(GeneralBlockTransfer.from_bytes(apdu))
            except ProtocolError as exc:
                await self.reject(MALFORMED, peer, f"block transfer: {exc}", peer.known)
                return None
            if whole is None:
                return None
            apdu = whole
        opened = open_apdu(apdu, self.directory, peer.known)
        if isinstance(opened, Rejected):
            await self.reject(opened.kind, peer, opened.reason, opened.meter, opened.system_title)
            return None
        meter = opened.meter or self._identify(opened, peer, event)
        if meter is None and self.show_unknown:
            content = map_notification(opened.notification, None)
            shown = Accepted(UNKNOWN, opened.notification, content, False, 0, [])
            if self.on_accepted is not None:
                self.on_accepted(shown)
            return shown
        if meter is None:
            await self.reject(UNKNOWN_SENDER, peer, "no meter of the inventory matches the push")
            return None
        if opened.invocation_counter is None and meter.keys is not None:
            # Anyone can write a meter's name into a plain push: a meter that has keys is
            # believed only when its push verifies with them.
            await self.reject(BAD_TAG, peer, "unciphered push naming a meter that has keys", meter)
            return None
        try:
            return await self._take(meter, opened, peer)
        except Exception as exc:
            log.exception("push from %s could not be stored", meter.meter_id)
            await self.reject(MALFORMED, peer, f"not stored: {type(exc).__name__}: {exc}", meter)
            return None

    def _identify(self, opened: Opened, peer: Peer, event: InboundApdu) -> KnownMeter | None:
        """A plain push: the meter this connection already proved to be, a name in the body,
        or the one meter known at the address it came from."""
        if peer.known is not None:
            return peer.known
        notification = opened.notification
        body = getattr(notification, "body", None)
        if body is not None:
            for text in _texts(body):
                found = self.directory.by_name(text)
                if found is not None:
                    return found
        return self.directory.by_address(peer.host, event.physical)

    async def _take(self, meter: KnownMeter, opened: Opened, peer: Peer) -> Accepted | None:
        peer.known = meter
        setup = setup_of(opened.notification) or PUSH_SETUP
        inbound = meter.transport == "inbound"
        objects = await self.objects.get(
            meter.meter_id, setup, wait=peer.transport == "tcp" and not inbound
        )
        if objects is None and inbound and peer.transport == "tcp":
            if len(peer.waiting) < MAX_WAITING:
                peer.waiting.append((meter, opened))
                return None
        if (
            objects is None
            and peer.transport == "udp"
            and self.objects.pending(meter.meter_id, setup)
            and len(self._later) < MAX_LATER
        ):
            # The shared datagram worker must not wait for one meter: this push waits alone.
            task = asyncio.create_task(self._when_listed(meter, opened, peer, setup))
            self._later.add(task)
            task.add_done_callback(self._later.discard)
            return None
        return await self._map_and_store(meter, opened, peer, objects)

    async def _when_listed(self, meter: KnownMeter, opened: Opened, peer: Peer, setup: str) -> None:
        try:
            objects = await self.objects.get(meter.meter_id, setup)
            await self._map_and_store(meter, opened, peer, objects)
        except Exception:
            log.exception("a push from %s could not be stored", meter.meter_id)

    async def complete(self, peer: Peer) -> None:
        """The pushes that waited for their object lists (the meter's connection is lent
        out now, so the lists can be read over it)."""
        waiting, peer.waiting = peer.waiting, []
        for meter, opened in waiting:
            setup = setup_of(opened.notification) or PUSH_SETUP
            try:
                objects = await self.objects.get(meter.meter_id, setup, retry=True)
                await self._map_and_store(meter, opened, peer, objects)
            except Exception:
                log.exception("a waiting push from %s could not be stored", meter.meter_id)

    async def _map_and_store(
        self, meter: KnownMeter, opened: Opened, peer: Peer, objects: list[PushObject] | None
    ) -> Accepted | None:
        repository = self.repository
        ciphered = opened.invocation_counter is not None
        content = map_notification(opened.notification, objects)
        now = self._clock()
        ts = content.ts or now
        new_events: list[EventRow] = []
        new_readings = 0
        if repository is not None:
            try:
                new_readings, new_events = await self._store(
                    meter, content, ts, now, opened.invocation_counter
                )
            except _Replay:
                await self.reject(
                    REPLAY,
                    peer,
                    f"invocation counter {opened.invocation_counter} not above the "
                    "last accepted one",
                    meter,
                    opened.system_title,
                )
                return None
            if ciphered and meter.transport in ("wrapper", "hdlc") and meter.host != peer.host:
                await self._moved(meter, peer.host)
        self.accepted += 1
        metrics.PUSH_MESSAGES.labels(outcome="accepted").inc()
        accepted = Accepted(
            meter.meter_id, opened.notification, content, ciphered, new_readings, new_events
        )
        if self.on_accepted is not None:
            self.on_accepted(accepted)
        return accepted

    async def _store(
        self,
        meter: KnownMeter,
        content: PushContent,
        ts: dt.datetime,
        now: dt.datetime,
        counter: int | None,
    ) -> tuple[int, list[EventRow]]:
        """One transaction (shared with other pushes: batching.py): the push's counter (a
        replay writes nothing), its readings, events, alarms, relay state and messages."""
        repository = self.repository
        assert repository is not None
        notifier = self.notifier
        meter_id = meter.meter_id
        rows = [ReadingRow(meter_id, obis, ts, value) for obis, value in content.readings]
        events = [
            EventRow(meter_id, log_, ts, code, event_codes.event_name(code, log_), "push")
            for log_, code in content.events
        ]

        async def work() -> tuple[int, list[EventRow]] | None:
            if counter is not None and not await repository.accept_push_counter(meter_id, counter):
                return None  # a replay: nothing written
            stored = await repository.store_readings(rows) if rows else 0
            if stored and notifier is not None:
                values = {obis: (_publishable(value), None) for obis, value in content.readings}
                notifier.readings(meter_id, ts, values, source="push")
            new = await repository.store_events(events) if events else []
            for event in new:
                if notifier is not None:
                    notifier.event(meter_id, event.ts, event.log, event.code, event.name, "push")
                await self._act_on(event, now)
            return stored, new

        writer = self.writer
        assert writer is not None  # there is one whenever there is a repository
        done = await writer.write(work)
        if done is None:
            raise _Replay
        return done

    async def _act_on(self, event: EventRow, now: dt.datetime) -> None:
        """Inside the push's transaction: alarms and relay state an event calls for."""
        repository = self.repository
        assert repository is not None
        notifier = self.notifier
        await power_failure_effect(repository, notifier, event)
        relay = event_codes.RELAY_EVENT_STATES.get(event.code)
        if relay is not None:
            state, output = relay
            hold = await repository.record_relay_state(
                event.meter_id, state, output, state, reason="push", ts=event.ts
            )
            if notifier is not None:
                notifier.relay_state(event.meter_id, state, output, event.ts, "push", hold=hold)

    async def _moved(self, meter: KnownMeter, host: str) -> None:
        assert self.repository is not None
        self.directory.moved(meter.meter_id, host)  # asked once, not on every push
        try:
            if await self.repository.update_meter_host(meter.meter_id, host):
                log.info("meter %s now calls from %s: its address is updated", meter.meter_id, host)
                if self.on_address_changed is not None:
                    self.on_address_changed(meter.meter_id)
        except Exception:
            log.exception("updating the address of %s failed", meter.meter_id)


def _publishable(value: Any) -> Any:
    if isinstance(value, bytes | str | int | float | bool) or value is None:
        return value
    return str(value)


def _texts(body: Any, depth: int = 0) -> list[str]:
    """Printable strings in a push body (at most a few levels deep, at most 32)."""
    out: list[str] = []
    if depth > 3:
        return out
    if body.type in (DataType.STRUCTURE, DataType.ARRAY):
        for element in body.value[:64]:
            out.extend(_texts(element, depth + 1))
            if len(out) >= 32:
                break
        return out
    raw = body.value
    if isinstance(raw, bytes) and 0 < len(raw) <= 64:
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            return out
        if text.isprintable():
            out.append(text)
    elif isinstance(raw, str) and 0 < len(raw) <= 64 and raw.isprintable():
        out.append(raw)
    return out


def _detail_text(detail: dict[str, Any]) -> str:
    return "; ".join(f"{k}={v}" for k, v in detail.items())
