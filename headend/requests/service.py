"""On-demand requests served: a read of some registers or of the relay, now, ahead of polls.

Why it is shaped this way:
- The bridge hands every request over with ``submit`` and acknowledges it at once: a request
  never holds up the balance events behind it, and ``submit`` neither blocks nor raises.
- Every request is answered, within ``timeout_s`` (polling.timeout_s) of its arrival: with
  the values, or with ``ok: false``, an error and a code. A malformed request and an unknown
  meter are answered too; one that carries no usable request id and no response topic has
  nowhere to be answered, so it raises a ``bad_request`` alarm instead of vanishing.
- Requests go ahead of polls: the meter's line lock is taken with priority REQUEST (after
  relay commands, before polls), and while requests run the relay pressure keeps new polls
  at a trickle, as for relay work. The session is the one polls and commands use
  (``MeterAccess.session``: the same association, counters and timeouts).
- Bounded: at most ``per_requester`` requests of one requester run at once (a requester is
  told apart by its MQTT 5 response topic; requests without one share a lane), at most
  ``total`` overall, and at most ``max_waiting`` wait; beyond that a request is answered
  ``busy`` at once. A request still waiting for its turn at its deadline is answered
  ``timeout``.
- Replies go through the Notifier, so through the durable outbox like every other message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cosem_objects.errors import ProtocolError
from drivers.dlms_errors import AssociationRefused, DataAccessFailed, DlmsError
from headend.meters.access import MeterAccess
from headend.meters.line_locks import REQUEST, RelayPressure
from headend.mqtt.notifier import Notifier
from headend.mqtt.payloads import (
    publishable,
    relay_payload,
    response_error_payload,
    response_relay_payload,
    response_values_payload,
)
from headend.requests.parse import BadRequest, ReadRequest, Request, parse_request

__all__ = ["ReplyTo", "RequestService", "RequestSettings"]

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ReplyTo:
    """Where the requester listens beyond ``responses/{request_id}`` (MQTT 5 properties)."""

    response_topic: str | None = None
    correlation_data: bytes | None = None


@dataclass(frozen=True, slots=True)
class RequestSettings:
    timeout_s: float = 10.0
    per_requester: int = 4
    total: int = 32
    max_waiting: int = 256
    reply_margin_s: float = 0.2
    """Left of the deadline for writing the answer."""


class _Failure(Exception):
    def __init__(self, code: str, error: str) -> None:
        super().__init__(error)
        self.code = code
        self.error = error


class RequestService:
    def __init__(
        self,
        access: MeterAccess,
        notifier: Notifier,
        settings: RequestSettings | None = None,
        *,
        pressure: RelayPressure | None = None,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.access = access
        self.notifier = notifier
        self.settings = settings or RequestSettings()
        self.pressure = pressure or RelayPressure()
        self._clock = clock
        self._queue: asyncio.Queue[tuple[Request, ReplyTo, float]] = asyncio.Queue()
        self._total = asyncio.Semaphore(self.settings.total)
        self._lanes: dict[str, tuple[asyncio.Semaphore, int]] = {}
        self._pending = 0
        self.answered = 0
        self.failed = 0

    def __repr__(self) -> str:
        return f"RequestService(pending={self._pending}, lanes={len(self._lanes)})"

    # -- in, from the bridge ------------------------------------------------------------------
    def submit(
        self,
        kind: str,
        payload: bytes,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
    ) -> None:
        """Take one request (never blocks, never raises): answered later, or at once when it
        is malformed or there is no room. The bridge's ``on_request``."""
        reply_to = ReplyTo(response_topic, correlation_data)
        try:
            deadline = asyncio.get_running_loop().time() + self.settings.timeout_s
            try:
                request = parse_request(kind, payload)
            except BadRequest as bad:
                self._error(bad.request_id, "malformed", bad.reason, reply_to, bad.meter_id)
                return
            if self._pending >= self.settings.max_waiting:
                self._error(
                    request.request_id,
                    "busy",
                    f"more than {self.settings.max_waiting} requests waiting; try again later",
                    reply_to,
                    request.meter_id,
                )
                return
            self._pending += 1
            self._queue.put_nowait((request, reply_to, deadline))
        except Exception:
            log.exception("request on %s could not be taken", kind[:40])

    # -- the worker ---------------------------------------------------------------------------
    async def run(self) -> None:
        """Serve requests until cancelled; meant for the daemon's TaskGroup."""
        async with asyncio.TaskGroup() as tg:
            while True:
                request, reply_to, deadline = await self._queue.get()
                tg.create_task(self._serve(request, reply_to, deadline))

    async def _serve(self, request: Request, reply_to: ReplyTo, deadline: float) -> None:
        try:
            answer_by = deadline - self.settings.reply_margin_s
            try:
                async with asyncio.timeout_at(answer_by):
                    async with self._lane(reply_to.response_topic or ""):
                        with self.pressure.busy():
                            payload = await self._execute(request)
            except TimeoutError:
                raise _Failure(
                    "timeout", f"no answer within {self.settings.timeout_s:g} s"
                ) from None
            self.notifier.response(
                payload,
                response_topic=reply_to.response_topic,
                correlation_data=reply_to.correlation_data,
            )
            self.answered += 1
        except _Failure as failure:
            self._error(request.request_id, failure.code, failure.error, reply_to, request.meter_id)
        except Exception as exc:  # whatever it was, the requester hears of it
            log.exception("request %s failed", request.request_id)
            self._error(request.request_id, "meter_error", str(exc), reply_to, request.meter_id)
        finally:
            self._pending -= 1

    @contextlib.asynccontextmanager
    async def _lane(self, requester: str) -> AsyncIterator[None]:
        lane, users = self._lanes.get(requester) or (
            asyncio.Semaphore(self.settings.per_requester),
            0,
        )
        self._lanes[requester] = (lane, users + 1)
        try:
            async with lane, self._total:
                yield
        finally:
            lane, users = self._lanes[requester]
            if users <= 1:
                del self._lanes[requester]
            else:
                self._lanes[requester] = (lane, users - 1)

    async def _execute(self, request: Request) -> dict[str, Any]:
        record = await self.access.record(request.meter_id)
        if record is None:
            raise _Failure("unknown_meter", f"no meter {request.meter_id} in the inventory")
        try:
            async with self.access.session(record, priority=REQUEST) as session:
                if isinstance(request, ReadRequest):
                    return await self._read(session, request)
                status = await session.relay_status()
        except AssociationRefused as exc:
            raise _Failure("refused", f"the meter refused the association: {exc}") from None
        except (DlmsError, ProtocolError) as exc:
            raise _Failure("meter_error", f"the meter answered with an error: {exc}") from None
        except TimeoutError:
            raise  # the deadline's: answered as a timeout
        except OSError as exc:
            raise _Failure("unreachable", f"meter unreachable: {exc}") from None
        now = self._clock()
        _news, hold = await self.access.command_repository.readback_news(
            request.meter_id, status.state, status.output_state
        )
        relay = relay_payload(
            request.meter_id, status.state, status.output_state, now, "request", hold=hold
        )
        return response_relay_payload(request.request_id, now, relay)

    async def _read(self, session: Any, request: ReadRequest) -> dict[str, Any]:
        values: dict[str, tuple[Any, str | None]] = {}
        missing: list[str] = []
        try:
            readings = await session.read(list(request.obis))
        except DataAccessFailed:  # one of them is not there: ask one at a time
            readings = {}
            for code in request.obis:
                try:
                    readings.update(await session.read([code]))
                except DataAccessFailed:
                    missing.append(code)
        for code in request.obis:
            reading = readings.get(code)
            if reading is None:
                if code not in missing:
                    missing.append(code)
                continue
            values[code] = (publishable(reading.value), reading.unit)
        return response_values_payload(
            request.request_id, request.meter_id, self._clock(), values, missing
        )

    # -- answers that are not values -----------------------------------------------------------
    def _error(
        self,
        request_id: str | None,
        code: str,
        error: str,
        reply_to: ReplyTo,
        meter_id: str | None = None,
    ) -> None:
        self.failed += 1
        now = self._clock()
        payload = response_error_payload(request_id, now, code, error, meter_id)
        sent = self.notifier.response(
            payload,
            response_topic=reply_to.response_topic,
            correlation_data=reply_to.correlation_data,
        )
        if not sent:
            detail = {"reason": error, "code": code}
            self.notifier.alarm("bad_request", now, meter_id=payload["meter_id"], detail=detail)
        log.info("request %s answered %s: %s", request_id, code, error[:200])
