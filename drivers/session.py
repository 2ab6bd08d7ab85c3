"""The asyncio client session for one meter: `async with DlmsSession(...) as meter:`.

It drives the sans-IO ClientConnection over any ApduTransport (TCP wrapper, HDLC over TCP or a
serial line), puts a timeout on every exchange, reserves invocation counters from a store the
caller provides (the daemon persists them per meter so none is ever reused), and offers the
operations a head-end needs: registers, clock, relay, profiles.

A meter that refuses a request's invocation counter as already passed (another client of the
same system title went ahead with higher counters from the shared store) did not process it:
the session sends it again from the counter the meter expects. Having met another client, it
then takes its counters one at a time, right before each is sent: a batch reserved ahead would
fall behind the other client's next reservation and be refused again, message after message."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from types import TracebackType
from typing import Any, Protocol

from cosem_objects.apdu.common import (
    AttributeDescriptor,
    DataAccessResult,
    MethodDescriptor,
    SelectiveAccess,
)
from cosem_objects.classes import (
    SCALER_ATTRIBUTE,
    VALUE_ATTRIBUTE,
    AssociationLN,
    Clock,
    ControlState,
    DisconnectControl,
    Obises,
    ProfileGeneric,
    ScalerUnit,
    guess_class_id,
    plain_value,
)
from cosem_objects.data import Data, DataType
from cosem_objects.dates import CosemDateTime
from cosem_objects.errors import DecodeError
from cosem_objects.obis import Obis
from cosem_objects.units import unit_name
from drivers import trail
from drivers.client_core import ClientConnection
from drivers.client_events import AttributeResult, Continue, Done, HlsChallenged, Outcome
from drivers.client_settings import ClientSettings
from drivers.client_state import AssociationState
from drivers.dlms_errors import DataAccessFailed, InvocationCounterRefused
from drivers.profiles import (
    CaptureObject,
    ProfileRow,
    decode_rows,
    entry_access,
    parse_capture_objects,
    range_access,
)


class ApduTransport(Protocol):
    """What a session needs from a transport: whole APDUs each way, with a timeout on reads."""

    async def open(self) -> None: ...
    async def send(self, apdu: bytes) -> None: ...
    async def receive(self, timeout: float) -> bytes: ...  # noqa: ASYNC109 - the transport contract
    async def close(self) -> None: ...


class InvocationCounterStore(Protocol):
    async def reserve(self, count: int, at_least: int = 0) -> int:
        """Reserve `count` consecutive counters, none below `at_least` (a value learnt from the
        meter); return the first. Never hands one out twice."""
        ...


class MemoryInvocationCounterStore:
    """For one-off CLI use against a meter: starts from a given value (e.g. read from the meter)."""

    def __init__(self, start: int = 1) -> None:
        self._next = start

    async def reserve(self, count: int, at_least: int = 0) -> int:
        first = max(self._next, at_least)
        self._next = first + count
        return first


@dataclass(frozen=True, slots=True)
class Reading:
    obis: str
    value: Any
    unit: str | None
    raw: Any
    scaler: int | None
    class_id: int


@dataclass(frozen=True, slots=True)
class RelayStatus:
    output_state: bool
    control_state: ControlState
    control_mode: int

    @property
    def state(self) -> str:
        return self.control_state.label


@dataclass(frozen=True, slots=True)
class ProfileData:
    columns: list[CaptureObject]
    capture_period_s: int
    rows: list[ProfileRow]


IC_BATCH = 32
IC_ATTEMPTS = 3  # sends of one request refused for its counter (the other client may cross again)
WITH_LIST_CHUNK = 10
_CLASS_FALLBACKS = (3, 1, 4, 5)


class DlmsSession:
    def __init__(
        self,
        transport: ApduTransport,
        settings: ClientSettings,
        *,
        timeout: float = 10.0,
        ic_store: InvocationCounterStore | None = None,
        scaler_cache: dict[str, ScalerUnit] | None = None,
        ic_batch: int = IC_BATCH,
    ) -> None:
        self.transport = transport
        self.settings = settings
        self.timeout = timeout
        self.core = ClientConnection(settings)
        self._ic_store = ic_store or MemoryInvocationCounterStore()
        self._ic_next = 0
        self._ic_end = 0
        self._ic_floor = 0  # no counter below this: the meter has taken higher ones
        self._ic_batch = ic_batch  # counters reserved at once (1 once another client is met)
        self.association_ic: int | None = None  # the counter of our AARQ (ciphered sessions)
        self._lock = asyncio.Lock()
        self.scaler_cache: dict[str, ScalerUnit] = scaler_cache if scaler_cache is not None else {}
        self._class_cache: dict[Obis, int] = {}

    # -- lifecycle -----------------------------------------------------------------------
    async def __aenter__(self) -> DlmsSession:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:
        await self.transport.open()
        try:
            await self._associate()
        except BaseException:
            await self.transport.close()
            raise

    async def close(self) -> None:
        """Release the association (best effort, bounded in time) and close the transport."""
        try:
            if self.core.state is AssociationState.ASSOCIATED:
                async with self._lock:
                    await self._send(self.core.release())
                    reply = await self.transport.receive(min(self.timeout, 5.0))
                    self.core.receive_rlre(reply)
        except (OSError, TimeoutError, DecodeError):
            pass
        except Exception:  # a meter that answers RLRQ badly must not keep the line
            pass
        finally:
            await self.transport.close()

    async def _associate(self) -> None:
        ic = await self._reserve_ic() if self.settings.ciphered else None
        self.association_ic = ic
        await self._send(self.core.associate(ic))
        sent_at = time.monotonic()
        reply = await self.transport.receive(self.timeout)
        trail.apdu_received(reply, elapsed_s=time.monotonic() - sent_at)
        outcome = self.core.receive_aare(reply)
        if isinstance(outcome, HlsChallenged):
            reply_ic = await self._reserve_ic()
            request = self.core.hls_reply(reply_ic)
            await self._exchange(request)

    # -- exchange ------------------------------------------------------------------------
    async def _reserve_ic(self) -> int:
        if self._ic_next >= self._ic_end:
            self._ic_next = await self._ic_store.reserve(self._ic_batch, self._ic_floor)
            self._ic_end = self._ic_next + self._ic_batch
        ic = self._ic_next
        self._ic_next += 1
        return ic

    async def _send(self, apdu: bytes) -> None:
        if self.core.needs_protection(apdu):
            ic = await self._reserve_ic()
            trail.apdu_sent(apdu, ic=ic)
            apdu = self.core.protect(apdu, ic)
        else:
            trail.apdu_sent(apdu)
        async with asyncio.timeout(self.timeout):  # no task per send, unlike wait_for
            await self.transport.send(apdu)

    async def _request(self, build: Callable[[], bytes]) -> Any:
        """One confirmed service; `build` makes its request. Refused for its invocation counter
        (the meter did not process it): again, with counters from the one it expects."""
        for attempt in range(1, IC_ATTEMPTS + 1):
            try:
                return await self._exchange(build())
            except InvocationCounterRefused as refused:
                if refused.expected is None or not self.settings.ciphered:
                    raise
                if attempt == IC_ATTEMPTS:
                    raise
                self._ic_floor = max(self._ic_floor, refused.expected)
                self._ic_next = self._ic_end = 0  # the rest of this batch is behind the meter
                self._ic_batch = 1
        raise AssertionError("unreachable")  # pragma: no cover

    async def _exchange(self, request: bytes) -> Any:
        outcome: Outcome = Continue(request)
        sent_at = time.monotonic()
        while not isinstance(outcome, Done):
            if isinstance(outcome, Continue):
                await self._send(outcome.apdu)
                sent_at = time.monotonic()
            reply = self.core.unprotect(await self.transport.receive(self.timeout))
            trail.apdu_received(reply, elapsed_s=time.monotonic() - sent_at)
            outcome = self.core.receive(reply)
        return outcome.value

    # -- generic services ----------------------------------------------------------------
    async def get(
        self, class_id: int, obis: Obis | str, attribute: int, access: SelectiveAccess | None = None
    ) -> Data:
        descriptor = AttributeDescriptor(class_id, _obis(obis), attribute)
        async with self._lock:
            value: Data = await self._request(partial(self.core.get, [(descriptor, access)]))
        return value

    async def get_many(self, items: Sequence[tuple[int, Obis | str, int]]) -> list[AttributeResult]:
        """Several attributes, with-list in chunks where the meter offers it, else one by one."""
        descriptors = [AttributeDescriptor(c, _obis(o), a) for c, o, a in items]
        results: list[AttributeResult] = []
        async with self._lock:
            if self.core.supports_with_list and len(descriptors) > 1:
                for start in range(0, len(descriptors), WITH_LIST_CHUNK):
                    chunk = descriptors[start : start + WITH_LIST_CHUNK]
                    if len(chunk) == 1:
                        results.append(await self._get_one(chunk[0]))
                        continue
                    request = partial(self.core.get, [(d, None) for d in chunk])
                    results.extend(await self._request(request))
            else:
                for descriptor in descriptors:
                    results.append(await self._get_one(descriptor))
        return results

    async def _get_one(self, descriptor: AttributeDescriptor) -> AttributeResult:
        try:
            value = await self._request(partial(self.core.get, [(descriptor, None)]))
        except DataAccessFailed as exc:
            return AttributeResult(None, DataAccessResult(exc.result))
        return AttributeResult(value, None)

    async def set(self, class_id: int, obis: Obis | str, attribute: int, value: Data) -> None:
        descriptor = AttributeDescriptor(class_id, _obis(obis), attribute)
        async with self._lock:
            await self._request(partial(self.core.set, descriptor, value))

    async def action(
        self, class_id: int, obis: Obis | str, method: int, parameters: Data | None = None
    ) -> Data | None:
        descriptor = MethodDescriptor(class_id, _obis(obis), method)
        if parameters is None:
            parameters = Data.integer(0)
        async with self._lock:
            result: Data | None = await self._request(
                partial(self.core.action, descriptor, parameters)
            )
        return result

    # -- registers -----------------------------------------------------------------------
    async def read(self, obis_codes: Sequence[Obis | str]) -> dict[str, Reading]:
        """Values with scaler and unit applied, for any mix of Register, Data, Clock, relay."""
        codes = [_obis(o) for o in obis_codes]
        readings: dict[str, Reading] = {}
        pending = list(codes)
        tried: dict[Obis, set[int]] = {}
        while pending:
            retry: list[Obis] = []
            items: list[tuple[int, Obis, int]] = []
            plan: list[tuple[Obis, int, bool]] = []
            for code in pending:
                class_id = self._class_cache.get(code) or guess_class_id(code)
                self._class_cache[code] = class_id
                tried.setdefault(code, set()).add(class_id)
                items.append((class_id, code, VALUE_ATTRIBUTE.get(class_id, 2)))
                want_scaler = class_id in SCALER_ATTRIBUTE and str(code) not in self.scaler_cache
                if want_scaler:
                    items.append((class_id, code, SCALER_ATTRIBUTE[class_id]))
                plan.append((code, class_id, want_scaler))
            results = iter(await self.get_many(items))
            for code, class_id, want_scaler in plan:
                value_result = next(results)
                scaler_result = next(results) if want_scaler else None
                if _class_mismatch(value_result):
                    # The meter has this object under another class: try the next candidate.
                    untried = [c for c in _CLASS_FALLBACKS if c not in tried[code]]
                    if untried:
                        self._class_cache[code] = untried[0]
                        retry.append(code)
                        continue
                value = value_result.unwrap(f"GET {code}")
                if scaler_result is not None:
                    self.scaler_cache[str(code)] = ScalerUnit.from_data(
                        scaler_result.unwrap(f"GET {code} scaler_unit")
                    )
                readings[str(code)] = self._reading(code, class_id, value)
            pending = retry
        return {str(code): readings[str(code)] for code in codes}

    def _reading(self, code: Obis, class_id: int, value: Data) -> Reading:
        scaler = self.scaler_cache.get(str(code)) if class_id in SCALER_ATTRIBUTE else None
        raw = value.to_python()
        if scaler is not None and isinstance(raw, int | float) and not isinstance(raw, bool):
            return Reading(
                str(code), scaler.apply(raw), scaler.unit_name, raw, scaler.scaler, class_id
            )
        if class_id == Clock.CLASS_ID and value.type is DataType.OCTET_STRING:
            return Reading(str(code), plain_value(value), None, value.value.hex(), None, class_id)
        shown = plain_value(value)
        return Reading(
            str(code),
            shown,
            unit_name(None),
            raw if not isinstance(raw, bytes) else raw.hex(),
            None,
            class_id,
        )

    # -- clock ---------------------------------------------------------------------------
    async def read_clock(self) -> dt.datetime:
        value = await self.get(Clock.CLASS_ID, Obises.CLOCK, Clock.TIME)
        stamp = _as_cosem_datetime(value)
        return stamp.to_datetime(self.settings.deviation_sign)

    async def set_clock(self, moment: dt.datetime) -> None:
        if moment.tzinfo is None:
            raise ValueError("set_clock needs an aware datetime")
        stamp = CosemDateTime.from_datetime(moment, deviation_sign=self.settings.deviation_sign)
        await self.set(
            Clock.CLASS_ID, Obises.CLOCK, Clock.TIME, Data.octet_string(stamp.to_bytes())
        )

    # -- relay ---------------------------------------------------------------------------
    async def relay_status(self, obis: Obis | str = Obises.DISCONNECT_CONTROL) -> RelayStatus:
        code = _obis(obis)
        results = await self.get_many(
            [
                (DisconnectControl.CLASS_ID, code, DisconnectControl.OUTPUT_STATE),
                (DisconnectControl.CLASS_ID, code, DisconnectControl.CONTROL_STATE),
                (DisconnectControl.CLASS_ID, code, DisconnectControl.CONTROL_MODE),
            ]
        )
        output, state, mode = (r.unwrap(f"GET {code} relay") for r in results)
        try:
            control_state = ControlState(int(state.value))
        except (TypeError, ValueError):
            raise DecodeError(f"unknown control_state {state.value!r}") from None
        return RelayStatus(bool(output.value), control_state, int(mode.value))

    async def disconnect(self, obis: Obis | str = Obises.DISCONNECT_CONTROL) -> RelayStatus:
        """remote_disconnect, then the state read back (the caller decides if it is right)."""
        await self.action(
            DisconnectControl.CLASS_ID, obis, DisconnectControl.REMOTE_DISCONNECT, Data.integer(0)
        )
        return await self.relay_status(obis)

    async def reconnect(self, obis: Obis | str = Obises.DISCONNECT_CONTROL) -> RelayStatus:
        await self.action(
            DisconnectControl.CLASS_ID, obis, DisconnectControl.REMOTE_RECONNECT, Data.integer(0)
        )
        return await self.relay_status(obis)

    # -- profiles ------------------------------------------------------------------------
    async def read_profile(
        self,
        obis: Obis | str,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        *,
        from_entry: int | None = None,
        to_entry: int = 0,
    ) -> ProfileData:
        """Rows by clock range (start..end) or by entry (from_entry..to_entry), typed and scaled."""
        code = _obis(obis)
        header = await self.get_many(
            [
                (ProfileGeneric.CLASS_ID, code, ProfileGeneric.CAPTURE_OBJECTS),
                (ProfileGeneric.CLASS_ID, code, ProfileGeneric.CAPTURE_PERIOD),
            ]
        )
        columns = parse_capture_objects(header[0].unwrap(f"GET {code} capture_objects"))
        period_value = header[1].value
        period = int(period_value.value) if period_value is not None else 0
        access: SelectiveAccess | None = None
        if start is not None or end is not None:
            clock_column = next((c for c in columns if c.is_clock), None)
            if clock_column is None:
                raise DecodeError(f"profile {code} has no clock column for a range read")
            access = range_access(
                clock_column,
                start or dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
                end or dt.datetime.now(dt.UTC) + dt.timedelta(days=1),
                self.settings.deviation_sign,
            )
        elif from_entry is not None:
            access = entry_access(from_entry, to_entry)
        buffer = await self.get(ProfileGeneric.CLASS_ID, code, ProfileGeneric.BUFFER, access)
        scalers = await self._column_scalers(columns)
        rows = decode_rows(buffer, columns, period, scalers, self.settings.deviation_sign)
        return ProfileData(columns, period, rows)

    async def _column_scalers(self, columns: list[CaptureObject]) -> dict[str, ScalerUnit]:
        wanted = [
            c
            for c in columns
            if c.class_id in SCALER_ATTRIBUTE and str(c.obis) not in self.scaler_cache
        ]
        if wanted:
            results = await self.get_many(
                [(c.class_id, c.obis, SCALER_ATTRIBUTE[c.class_id]) for c in wanted]
            )
            for column, result in zip(wanted, results, strict=True):
                if result.value is not None:
                    self.scaler_cache[str(column.obis)] = ScalerUnit.from_data(result.value)
        return {
            str(c.obis): self.scaler_cache[str(c.obis)]
            for c in columns
            if str(c.obis) in self.scaler_cache
        }

    async def object_list(self) -> list[tuple[int, int, Obis]]:
        """(class_id, version, logical name) of every object the association can see."""
        value = await self.get(
            AssociationLN.CLASS_ID, Obises.CURRENT_ASSOCIATION, AssociationLN.OBJECT_LIST
        )
        if value.type is not DataType.ARRAY:
            raise DecodeError("object_list must be an array")
        entries = []
        for element in value.value:
            if element.type is not DataType.STRUCTURE or len(element.value) < 3:
                raise DecodeError("object_list entry must be a structure")
            class_id, version, name = (e.value for e in element.value[:3])
            if not isinstance(name, bytes):
                raise DecodeError("object_list logical name must be an octet-string")
            entries.append((int(class_id), int(version), Obis.from_bytes(name)))
        return entries


def _obis(value: Obis | str) -> Obis:
    return value if isinstance(value, Obis) else _parse_obis(value)


@lru_cache(maxsize=1024)
def _parse_obis(text: str) -> Obis:
    """Every poll names the same few codes as text: parsed once (an Obis is immutable)."""
    return Obis.parse(text)


def _class_mismatch(result: AttributeResult) -> bool:
    return result.error is not None and int(result.error) in (4, 9, 11)


def _as_cosem_datetime(value: Data) -> CosemDateTime:
    if value.type is DataType.DATE_TIME:
        stamp: CosemDateTime = value.value
        return stamp
    if value.type is DataType.OCTET_STRING and len(value.value) == 12:
        return CosemDateTime.from_bytes(value.value)
    raise DecodeError(f"clock time is a {value.type.type_name}, not a date-time")
