"""`headend probe`: what an unknown meter speaks, found by asking it only harmless questions.

1. Framing: over TCP an AARQ in a wrapper frame first (one try, short deadline), then an HDLC
   SNRM to the management logical device with a 1-byte server address, which a meter answers
   whatever its physical address (the UA's source address then says what that address is). On
   a serial port only HDLC is tried.
2. Clients: for each client SAP a plain AARQ without authentication, in a link of its own. An
   accepted one is an association the meter gives without keys; a refusal that names the
   authentication mechanism (or, for a management client, the plain context) means the client
   exists and needs authentication. No password and no key is ever guessed: meters count failed
   authentications and lock clients out.
3. Through the first client that is accepted: logical device name, serial number, the security
   setup's policy, suite and system title, and the object list (its length).

Every try has its own deadline, so a probe of a silent address ends in bounded time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cosem_objects.acse import AARE, AcseServiceUserDiagnostic, AssociationResult, Conformance
from cosem_objects.classes import DataObject, Obises, SecuritySetup, plain_value
from cosem_objects.errors import ProtocolError
from drivers.client_core import ClientConnection
from drivers.client_settings import ClientSettings
from drivers.dlms_errors import DlmsError
from drivers.errors import ConnectionRefusedByPeer, TransportError
from drivers.hdlc import HdlcAddress, HdlcParameters
from drivers.session import ApduTransport, DlmsSession
from drivers.transports import (
    HdlcSerialTransport,
    HdlcTcpTransport,
    SerialSettings,
    TcpWrapperTransport,
    get_serial_line,
)
from drivers.transports.stream import ByteStream
from headend.fieldtools.link_check import LinkAnswer, check_link

# The clients the project's meters know (README: dlms-sim); other SAPs are tried unnamed.
CLIENT_NAMES = {16: "public", 32: "reader", 1: "management"}
DEFAULT_CLIENT_SAPS = (16, 32, 1, 17, 48)
MANAGEMENT_LOGICAL_DEVICE = 1
BUS_LINGER_S = 0.3
LOGICAL_DEVICE_NAME = "0.0.42.0.0.255"
_NEEDS_AUTH = {
    AcseServiceUserDiagnostic.AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED,
    AcseServiceUserDiagnostic.AUTHENTICATION_MECHANISM_NAME_REQUIRED,
    AcseServiceUserDiagnostic.AUTHENTICATION_FAILURE,
    AcseServiceUserDiagnostic.AUTHENTICATION_REQUIRED,
}
_FAILURES = (OSError, TimeoutError, ProtocolError, DlmsError, ValueError)


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    host: str | None = None
    port: int = 4059
    serial_port: str | None = None
    baud: int = 9600
    logical: int = MANAGEMENT_LOGICAL_DEVICE
    physical: int | None = None  # HDLC: ask this station only (on a shared bus)

    def __str__(self) -> str:
        return self.serial_port or f"{self.host}:{self.port}"


@dataclass(slots=True)
class ClientOutcome:
    client_sap: int
    outcome: str  # accepted | needs authentication | refused (by its AARE) | no answer
    detail: str = ""

    @property
    def name(self) -> str:
        return CLIENT_NAMES.get(self.client_sap, "client")

    def to_json(self) -> dict[str, Any]:
        return {
            "client_sap": self.client_sap,
            "name": self.name,
            "outcome": self.outcome,
            "detail": self.detail,
        }


@dataclass(slots=True)
class ProbeReport:
    target: str
    transport: str | None = None  # wrapper | hdlc | serial (HDLC over a serial line)
    server_logical: int | None = None
    server_physical: int | None = None
    hdlc_parameters: dict[str, int] | None = None
    clients: list[ClientOutcome] = field(default_factory=list)
    conformance: list[str] = field(default_factory=list)
    conformance_hex: str | None = None
    max_pdu_size: int | None = None
    dlms_version: int | None = None
    identity: dict[str, Any] = field(default_factory=dict)
    object_count: int | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.transport is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "transport": self.transport,
            "server_logical": self.server_logical,
            "server_physical": self.server_physical,
            "hdlc_parameters": self.hdlc_parameters,
            "clients": [c.to_json() for c in self.clients],
            "accepted_without_keys": [
                c.client_sap for c in self.clients if c.outcome == "accepted"
            ],
            "conformance": self.conformance,
            "conformance_hex": self.conformance_hex,
            "max_pdu_size": self.max_pdu_size,
            "dlms_version": self.dlms_version,
            **self.identity,
            "object_count": self.object_count,
            "errors": self.errors,
        }


def _text(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _classify(sap: int, aare: AARE) -> ClientOutcome:
    diagnostic = int(aare.diagnostic)
    name = _diagnostic_name(aare)
    if aare.result == AssociationResult.ACCEPTED and diagnostic == 0:
        return ClientOutcome(sap, "accepted", "no authentication")
    if diagnostic in _NEEDS_AUTH:
        return ClientOutcome(sap, "needs authentication", name)
    if diagnostic == AcseServiceUserDiagnostic.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED:
        return ClientOutcome(sap, "needs authentication", f"{name}: a ciphered association")
    error = aare.confirmed_service_error
    if error is not None:
        name += f", {error.to_json()}"
    return ClientOutcome(sap, "refused", name)


def _diagnostic_name(aare: AARE) -> str:
    try:
        if aare.diagnostic_source == "acse-service-user":
            return AcseServiceUserDiagnostic(aare.diagnostic).name.lower().replace("_", "-")
    except ValueError:
        pass
    return f"{aare.diagnostic_source} {int(aare.diagnostic)}"


class _Prober:
    def __init__(self, target: ProbeTarget, wait_s: float, session_timeout: float) -> None:
        self.target = target
        self.wait_s = wait_s
        self.session_timeout = session_timeout
        self.report = ProbeReport(str(target))
        self.accepted_aare: AARE | None = None

    # -- transports --------------------------------------------------------------------------
    def transport(self, sap: int, timeout: float) -> ApduTransport:
        t, report = self.target, self.report
        logical = report.server_logical or t.logical
        if report.transport == "wrapper":
            assert t.host is not None
            return TcpWrapperTransport(
                t.host, t.port, client_wport=sap, server_wport=logical, timeout=timeout
            )
        physical = report.server_physical
        if report.transport == "serial":
            assert t.serial_port is not None
            return HdlcSerialTransport(
                t.serial_port,
                t.baud,
                client_sap=sap,
                server_logical=logical,
                server_physical=physical,
                timeout=timeout,
                lock_timeout=timeout,
            )
        assert t.host is not None
        return HdlcTcpTransport(
            t.host,
            t.port,
            client_sap=sap,
            server_logical=logical,
            server_physical=physical,
            timeout=timeout,
        )

    async def _associate(self, transport: ApduTransport, sap: int) -> ClientOutcome:
        """One plain AARQ from `sap`; the link is closed afterwards whatever happened."""
        try:
            await transport.open()
        except ConnectionRefusedByPeer:
            return ClientOutcome(sap, "refused", "link refused (DM)")
        except TimeoutError:
            return ClientOutcome(sap, "no answer", "link not set up")
        try:
            aarq = ClientConnection(ClientSettings(client_sap=sap)).associate()
            async with asyncio.timeout(self.wait_s):
                await transport.send(aarq)
            reply = await transport.receive(self.wait_s)
            aare = AARE.from_bytes(reply)
        except TimeoutError:
            return ClientOutcome(sap, "no answer", "no AARE")
        except (ProtocolError, TransportError) as exc:
            # Not an AARE (another framing on this port, or a broken stack): no DLMS answer.
            return ClientOutcome(sap, "no answer", f"unreadable reply: {_text(exc)}")
        finally:
            params = getattr(transport, "hdlc_parameters", None)
            if isinstance(params, HdlcParameters) and self.report.hdlc_parameters is None:
                self.report.hdlc_parameters = {
                    "max_info_tx": params.max_info_tx,
                    "max_info_rx": params.max_info_rx,
                    "window_tx": params.window_tx,
                    "window_rx": params.window_rx,
                }
            await transport.close()
        outcome = _classify(sap, aare)
        if outcome.outcome == "accepted" and self.accepted_aare is None:
            self.accepted_aare = aare
        return outcome

    # -- steps -------------------------------------------------------------------------------
    async def framing(self) -> None:
        t, report = self.target, self.report
        if t.serial_port is None:
            report.transport = "wrapper"  # for self.transport(); kept only if it answers
            try:
                first = await self._associate(self.transport(16, self.wait_s), 16)
            except BaseException:
                report.transport = None
                raise
            if first.outcome != "no answer":
                report.server_logical = t.logical
                report.clients.append(first)
                return
            report.transport = None
        answer = await self._hdlc_link()
        if answer is None:
            framing = "HDLC" if t.serial_port else "wrapper nor HDLC"
            report.errors.append(f"no answer in {framing} from {t}")
            return
        if answer.answers > 1 or answer.bad_frames:
            report.errors.append(
                f"several stations seem to answer logical device {t.logical} on {t} "
                f"({answer.answers} answers, {answer.bad_frames} damaged frames): "
                "give --physical (headend scan lists them)"
            )
            return
        report.transport = "serial" if t.serial_port else "hdlc"
        report.server_logical = answer.server.upper
        report.server_physical = answer.server.lower
        if not answer.accepted:
            report.errors.append(f"HDLC station {answer.server} answered SNRM with DM")

    async def _hdlc_link(self) -> LinkAnswer | None:
        t = self.target
        client = HdlcAddress.client(16)
        server = (
            HdlcAddress.server(t.logical)
            if t.physical is None
            else HdlcAddress.server(t.logical, t.physical)
        )
        if t.serial_port is not None:
            line = get_serial_line(t.serial_port)
            stream = await line.acquire(SerialSettings(t.baud), self.session_timeout)
            try:
                # A bus may hold several stations: count the answers to a shared address.
                linger = BUS_LINGER_S if t.physical is None else 0.0
                return await check_link(stream, client, server, self.wait_s, linger_s=linger)
            finally:
                await line.release()
        assert t.host is not None
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.session_timeout):
            _, tcp = await loop.create_connection(ByteStream, t.host, t.port)
        try:
            return await check_link(tcp, client, server, self.wait_s)
        finally:
            await tcp.close()

    async def clients(self, saps: Sequence[int]) -> None:
        done = {c.client_sap for c in self.report.clients}
        for sap in saps:
            if sap not in done:
                self.report.clients.append(
                    await self._associate(self.transport(sap, self.wait_s), sap)
                )

    def terms(self) -> None:
        aare = self.accepted_aare
        response = aare.initiate_response if aare is not None else None
        if response is None:
            return
        granted = Conformance(response.conformance)
        report = self.report
        report.conformance = [
            (f.name or str(int(f))).lower().replace("_", "-") for f in Conformance if f & granted
        ]
        report.conformance_hex = granted.to_bytes().hex().upper()
        report.max_pdu_size = response.max_pdu_size
        report.dlms_version = response.dlms_version

    async def identity(self) -> None:
        accepted = [c.client_sap for c in self.report.clients if c.outcome == "accepted"]
        if not accepted:
            self.report.errors.append("no client is accepted without authentication")
            return
        sap = accepted[0]
        settings = ClientSettings(
            client_sap=sap,
            server_logical=self.report.server_logical or self.target.logical,
            server_physical=self.report.server_physical,
        )
        transport = self.transport(sap, self.session_timeout)
        items: list[tuple[str, int, str, int]] = [
            ("logical_device_name", DataObject.CLASS_ID, LOGICAL_DEVICE_NAME, DataObject.VALUE),
            ("serial_number", DataObject.CLASS_ID, str(Obises.SERIAL_NUMBER), DataObject.VALUE),
            ("security_policy", SecuritySetup.CLASS_ID, str(Obises.SECURITY_SETUP), 2),
            ("security_suite", SecuritySetup.CLASS_ID, str(Obises.SECURITY_SETUP), 3),
            ("server_system_title", SecuritySetup.CLASS_ID, str(Obises.SECURITY_SETUP), 5),
        ]
        try:
            async with DlmsSession(transport, settings, timeout=self.session_timeout) as session:
                results = await session.get_many([(c, o, a) for _, c, o, a in items])
                for (name, *_), result in zip(items, results, strict=True):
                    if result.value is None:
                        self.report.identity[name] = None
                        continue
                    value = plain_value(result.value)
                    if name == "server_system_title" and isinstance(result.value.value, bytes):
                        value = result.value.value.hex().upper()
                    self.report.identity[name] = value
                self.report.object_count = len(await session.object_list())
        except _FAILURES as exc:
            self.report.errors.append(f"reading identity over client {sap}: {_text(exc)}")


async def probe_meter(
    target: ProbeTarget,
    *,
    client_saps: Sequence[int] = DEFAULT_CLIENT_SAPS,
    wait_s: float = 1.5,
    session_timeout: float = 5.0,
    progress: Callable[[str], None] | None = None,
) -> ProbeReport:
    """What `target` speaks; never raises for what the meter does (see report.errors)."""
    prober = _Prober(target, wait_s, session_timeout)
    say = progress or (lambda _text: None)
    try:
        say("framing")
        await prober.framing()
        if prober.report.ok:
            say("clients")
            await prober.clients(client_saps)
            prober.terms()
            say("identity")
            await prober.identity()
    except _FAILURES as exc:
        prober.report.errors.append(f"{target}: {_text(exc)}")
    return prober.report
