"""From connection parameters (an inventory row or CLI options) to an open-able DlmsSession.

One place maps `transport` + `security` to a transport object and ClientSettings, so the CLI, the
daemon and the benchmarks connect to meters the same way. The per-meter fields of MeterConnection
are drivers.inventory_columns.CONNECTION_FIELDS, in that order (tests/test_meter_fields.py).

`associated_session` is how the head-end opens one: an HLS meter that refuses the association
because our stored invocation counter is behind its frame counter (a restored or new database)
is asked for that counter over the public client, and the association is tried again above it
(the retry itself may meet another client of the installation in session with the meter: a
bounded number of tries)."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from cosem_objects.errors import ProtocolError
from drivers.client_settings import Authentication, ClientSettings
from drivers.dlms_errors import AssociationRefused, DlmsError, InvocationCounterRefused
from drivers.inventory_columns import SECRET_FIELDS
from drivers.session import IC_ATTEMPTS, IC_BATCH, DlmsSession, InvocationCounterStore

log = logging.getLogger(__name__)

SYSTEM_TITLE_MAKER = b"HES"  # the three-letter maker part of the titles we make


def new_system_title() -> bytes:
    """A client system title no other installation (or one-off session) shares: the maker
    part, then five random bytes. The title is half of every GCM nonce, so two clients with
    one title and one key would, sooner or later, use one nonce twice."""
    return SYSTEM_TITLE_MAKER + secrets.token_bytes(5)


TRANSPORTS = ("wrapper", "hdlc", "serial", "inbound")
"""`inbound`: a meter reached only over the connection it opens (the head-end's listener
lends that connection; there is nothing to connect to)."""
SECURITIES = ("none", "lls", "hls-gmac")


@dataclass(frozen=True)
class MeterConnection:
    """How to reach one meter. Secrets stay out of repr."""

    host: str | None = "127.0.0.1"
    port: int = 4059
    transport: str = "wrapper"
    client_sap: int = 16
    server_logical: int = 1
    server_physical: int | None = None
    security: str = "none"
    password: bytes | None = field(default=None, repr=False)
    auth_key: bytes | None = field(default=None, repr=False)
    enc_key: bytes | None = field(default=None, repr=False)
    serial_port: str | None = None
    baud: int = 9600
    mode_e: bool = False
    client_system_title: bytes = b"HES\x00\x00\x00\x00\x01"
    deviation_sign: int = 1

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}")
        if self.security not in SECURITIES:
            raise ValueError(f"security must be one of {', '.join(SECURITIES)}")
        if self.transport == "serial" and not self.serial_port:
            raise ValueError("serial transport needs a serial port")

    @property
    def line(self) -> str:
        """What must be used by one session at a time: the serial line, or the meter's socket."""
        if self.transport == "serial":
            return f"serial:{self.serial_port}"
        return f"tcp:{self.host}:{self.port}"

    def settings(self) -> ClientSettings:
        return ClientSettings(
            client_sap=self.client_sap,
            server_logical=self.server_logical,
            server_physical=self.server_physical,
            authentication=Authentication(self.security),
            password=self.password,
            auth_key=self.auth_key,
            enc_key=self.enc_key,
            client_system_title=self.client_system_title,
            deviation_sign=self.deviation_sign,
        )

    def transport_object(self, timeout: float):  # type: ignore[no-untyped-def]
        from drivers.transports import HdlcSerialTransport, HdlcTcpTransport, TcpWrapperTransport

        if self.transport == "inbound":
            raise ValueError(
                "an inbound meter is reached only over the connection it opens to the listener"
            )
        if self.transport == "wrapper":
            assert self.host is not None
            return TcpWrapperTransport(
                self.host,
                self.port,
                client_wport=self.client_sap,
                server_wport=self.server_logical,
                timeout=timeout,
            )
        physical = self.server_physical
        if self.transport == "hdlc":
            assert self.host is not None
            return HdlcTcpTransport(
                self.host,
                self.port,
                client_sap=self.client_sap,
                server_logical=self.server_logical,
                server_physical=physical,
                timeout=timeout,
            )
        assert self.serial_port is not None
        return HdlcSerialTransport(
            self.serial_port,
            baudrate=self.baud,
            client_sap=self.client_sap,
            server_logical=self.server_logical,
            server_physical=physical,
            mode_e=self.mode_e,
            timeout=timeout,
        )


def open_session(
    connection: MeterConnection,
    *,
    timeout: float = 10.0,
    ic_store: InvocationCounterStore | None = None,
    ic_batch: int = IC_BATCH,
) -> DlmsSession:
    """A session ready for `async with` (the transport opens on enter)."""
    return DlmsSession(
        connection.transport_object(timeout),
        connection.settings(),
        timeout=timeout,
        ic_store=ic_store,
        ic_batch=ic_batch,
    )


class _Above:
    """An InvocationCounterStore that hands out nothing below `floor` (the meter's counter)."""

    def __init__(self, store: InvocationCounterStore, floor: int) -> None:
        self.store = store
        self.floor = floor

    async def reserve(self, count: int, at_least: int = 0) -> int:
        return await self.store.reserve(count, max(at_least, self.floor))


async def _associate(
    connection: MeterConnection, request_timeout: float, ic_store: InvocationCounterStore
) -> DlmsSession:
    store, batch = ic_store, IC_BATCH
    for attempt in range(1, IC_ATTEMPTS + 1):
        session = open_session(connection, timeout=request_timeout, ic_store=store, ic_batch=batch)
        try:
            await session.open()
            return session
        except InvocationCounterRefused as refused:
            # HLS pass 3 refused: another client went ahead since our AARQ; the meter says
            # which counter it expects.
            if refused.expected is None or attempt == IC_ATTEMPTS:
                raise
            floor = refused.expected
        except AssociationRefused as refused:
            # The AARQ refused; meters do not say why. If our counter was not above the meter's
            # frame counter, that is why.
            used = session.association_ic
            if used is None or attempt == IC_ATTEMPTS:  # not ciphered: the counter is not why
                raise
            try:
                frame_counter = await read_frame_counter(connection, timeout=request_timeout)
            except (OSError, TimeoutError, ProtocolError, DlmsError, ValueError):
                raise refused from None  # the refusal is what the caller must see
            if used > frame_counter:
                raise  # our counter was ahead: refused for another reason (a key, ...)
            floor = frame_counter + 1
        log.warning(
            "meter at %s is past invocation counter %d: continuing from %d",
            connection.line,
            session.association_ic,
            floor,
        )
        # From now on one counter at a time, reserved right before it is sent: the meter may
        # be in session with another client of this title (drivers.session).
        store, batch = _Above(ic_store, floor), 1
    raise AssertionError("unreachable")  # pragma: no cover


@asynccontextmanager
async def associated_session(
    connection: MeterConnection,
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 - per request, as open_session's
    ic_store: InvocationCounterStore,
) -> AsyncIterator[DlmsSession]:
    """An associated session, released when the block ends. A ciphered association refused
    with a counter at or below the meter's frame counter (0.0.43.1.0.255, read over the public
    client), or whose HLS pass 3 is refused for its counter, is tried again with counters from
    the store lifted above what the meter has taken (at most IC_ATTEMPTS associations): the
    store never hands out a counter twice, so nothing the meter has seen is sent again."""
    session = await _associate(connection, timeout, ic_store)
    try:
        yield session
    finally:
        await session.close()


async def read_frame_counter(connection: MeterConnection, *, timeout: float = 10.0) -> int:  # noqa: ASYNC109 - bounded by the session timeout
    """The meter's invocation counter (0.0.43.1.0.255), read over the public client.

    A caller with no stored counter (a one-off CLI session) starts above it, so the meter never
    sees a counter it has already taken (the Gurux `updateFrameCounter` approach)."""
    from cosem_objects.classes import DataObject, Obises

    no_secrets: dict[str, Any] = dict.fromkeys(SECRET_FIELDS)
    public = replace(connection, client_sap=16, security="none", **no_secrets)
    async with open_session(public, timeout=timeout) as session:
        value = await session.get(DataObject.CLASS_ID, Obises.INVOCATION_COUNTER, DataObject.VALUE)
    if not isinstance(value.value, int) or isinstance(value.value, bool):
        raise ValueError("invocation counter is not an integer")
    return int(value.value)
