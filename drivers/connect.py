"""From connection parameters (an inventory row or CLI options) to an open-able DlmsSession.

One place maps `transport` + `security` to a transport object and ClientSettings, so the CLI, the
daemon and the benchmarks connect to meters the same way. The per-meter fields of MeterConnection
are drivers.inventory_columns.CONNECTION_FIELDS, in that order (tests/test_meter_fields.py)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from drivers.client_settings import Authentication, ClientSettings
from drivers.inventory_columns import SECRET_FIELDS
from drivers.session import DlmsSession, InvocationCounterStore

TRANSPORTS = ("wrapper", "hdlc", "serial")
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
) -> DlmsSession:
    """A session ready for `async with` (the transport opens on enter)."""
    return DlmsSession(
        connection.transport_object(timeout),
        connection.settings(),
        timeout=timeout,
        ic_store=ic_store,
    )


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
