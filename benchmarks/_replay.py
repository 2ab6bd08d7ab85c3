"""Floors: the CPU of a session's bytes alone, with the network and asyncio taken away.

A session is first recorded against a real simulated meter (every APDU each way, as the
transport saw it). `CoreReplay` then drives a fresh sans-IO ClientConnection through the same
exchange with the meter's recorded replies, plus the framing of the same transport (wrapper
header build/parse, or the sans-IO HDLC client link fed the server's recorded frames): the
encoding, ciphering, framing and decoding of that session's bytes, nothing else.
`DlmsCosemReplay` does the same exchange with dlms-cosem 21.3.2's sans-IO DlmsConnection
(send / receive_data / next_event) and its A-XDR parser: the reference floor of issue 2."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from cosem_objects import security
from cosem_objects.acse import AARQ
from cosem_objects.apdu import (
    ActionRequestNormal,
    GetRequestNormal,
    GetRequestWithList,
    SetRequestNormal,
)
from cosem_objects.decode import decode_apdu
from drivers.client_core import ClientConnection
from drivers.client_events import Done
from drivers.client_settings import ClientSettings
from drivers.connect import MeterConnection
from drivers.hdlc.addresses import HdlcAddress
from drivers.hdlc.connection import HdlcClientConnection, HdlcServerConnection
from drivers.hdlc.events import ApduReceived, SendFrame
from drivers.session import DlmsSession
from drivers.wrapper import WrapperReader, encode_wrapper

_CLEAR_TAGS = (0x60, 0x61, 0x62, 0x63, 0xE0)
_HLS_METHOD = (15, "0.0.40.0.0.255", 1)


# -- recording ----------------------------------------------------------------------------------
class RecordingTransport:
    """An ApduTransport that passes everything through and keeps a copy."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.log: list[tuple[str, bytes]] = []

    async def open(self) -> None:
        await self.inner.open()

    async def send(self, apdu: bytes) -> None:
        self.log.append(("send", bytes(apdu)))
        await self.inner.send(apdu)

    async def receive(self, timeout: float) -> bytes:  # noqa: ASYNC109 - the contract
        apdu: bytes = await self.inner.receive(timeout)
        self.log.append(("recv", bytes(apdu)))
        return apdu

    async def close(self) -> None:
        await self.inner.close()


@dataclass
class Recording:
    connection: MeterConnection
    settings: ClientSettings
    pairs: list[tuple[bytes, bytes]]  # (request as sent, reply as received), in order

    @property
    def bytes_exchanged(self) -> int:
        return sum(len(a) + len(b) for a, b in self.pairs)


async def record(
    connection: MeterConnection,
    work: Callable[[DlmsSession], Awaitable[Any]],
    *,
    request_timeout: float = 10.0,
    ic_store: Any = None,
) -> Recording:
    """Run `work(session)` once against the meter and keep every APDU. Pass the `ic_store`
    later sessions with this meter use: a meter refuses invocation counters it has seen."""
    transport = RecordingTransport(connection.transport_object(request_timeout))
    session = DlmsSession(
        transport, connection.settings(), timeout=request_timeout, ic_store=ic_store
    )
    async with session:
        await work(session)
    pairs: list[tuple[bytes, bytes]] = []
    pending: bytes | None = None
    for kind, apdu in transport.log:
        if kind == "send":
            if pending is not None:
                raise RuntimeError("two requests without a reply in between: cannot replay")
            pending = apdu
        else:
            if pending is None:
                raise RuntimeError("a reply without a request: cannot replay")
            pairs.append((pending, apdu))
            pending = None
    return Recording(connection, connection.settings(), pairs)


# -- our sans-IO stack --------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    kind: str  # associate | hls | get | set | action | release
    items: Any = None
    ctos: bytes | None = None


def _plain_request(apdu: bytes, settings: ClientSettings) -> bytes:
    if not settings.ciphered or apdu[0] in _CLEAR_TAGS:
        return apdu
    plain, _ic = security.unwrap_service_specific(apdu, settings.client_system_title, settings.keys)
    return plain


def plan(recording: Recording) -> list[Step]:
    """What the session asked of the core, read back from the requests it sent."""
    settings = recording.settings
    steps: list[Step] = []
    for request, _reply in recording.pairs:
        plain = _plain_request(request, settings)
        tag = plain[0]
        if tag == 0x60:
            aarq = AARQ.from_bytes(plain)
            ctos = aarq.calling_authentication_value if settings.ciphered else None
            steps.append(Step("associate", ctos=ctos))
            continue
        if tag == 0x62:
            steps.append(Step("release"))
            continue
        apdu = decode_apdu(plain)
        if isinstance(apdu, GetRequestNormal):
            steps.append(Step("get", [(apdu.attribute, apdu.access)]))
        elif isinstance(apdu, GetRequestWithList):
            steps.append(Step("get", list(apdu.attributes)))
        elif isinstance(apdu, SetRequestNormal):
            steps.append(Step("set", (apdu.attribute, apdu.value, apdu.access)))
        elif isinstance(apdu, ActionRequestNormal):
            method = apdu.method
            key = (method.class_id, str(method.obis), method.method)
            steps.append(Step("hls" if key == _HLS_METHOD else "action", (method, apdu.parameters)))
        # Anything else (GetRequestNext, GBT acks, next blocks) is a continuation the core
        # produces by itself from the previous reply.
    return steps


class WrapperFraming:
    """Client side of the TCP wrapper with the server's frames pre-built."""

    def __init__(self, recording: Recording) -> None:
        connection = recording.connection
        self.client_wport = connection.client_sap
        self.server_wport = connection.server_logical
        self.framed = [
            encode_wrapper(self.server_wport, self.client_wport, reply)
            for _request, reply in recording.pairs
        ]

    def session(self) -> _WrapperSession:
        return _WrapperSession(self)


class _WrapperSession:
    def __init__(self, framing: WrapperFraming) -> None:
        self.framing = framing
        self.reader = WrapperReader()
        self.replies: Iterator[bytes] = iter(framing.framed)

    def open(self) -> None:
        pass

    def send(self, apdu: bytes) -> None:
        encode_wrapper(self.framing.client_wport, self.framing.server_wport, apdu)

    def receive(self) -> bytes:
        return self.reader.feed(next(self.replies))[0].apdu

    def close(self) -> None:
        pass


class HdlcFraming:
    """Client side of HDLC: the sans-IO client link fed the server's frames, recorded once
    from an in-memory HdlcServerConnection answering the recorded replies."""

    def __init__(self, recording: Recording) -> None:
        connection = recording.connection
        self.client_address = HdlcAddress.client(connection.client_sap)
        self.server_address = HdlcAddress.server(
            connection.server_logical, connection.server_physical, None
        )
        self.chunks: list[bytes] = []
        self._prepare(recording.pairs)

    def _prepare(self, pairs: Sequence[tuple[bytes, bytes]]) -> None:
        client = HdlcClientConnection(self.client_address, self.server_address)
        server = HdlcServerConnection(self.server_address)
        replies = iter(reply for _request, reply in pairs)

        def run(to_server: list[bytes]) -> list[bytes]:
            received: list[bytes] = []
            while to_server:
                to_client: list[bytes] = []
                for data in to_server:
                    for event in server.receive_data(data):
                        if isinstance(event, SendFrame):
                            to_client.append(event.data)
                        elif isinstance(event, ApduReceived):
                            to_client.extend(server.send_apdu(next(replies)))
                to_server = []
                for data in to_client:
                    self.chunks.append(data)
                    for event in client.receive_data(data):
                        if isinstance(event, SendFrame):
                            to_server.append(event.data)
                        elif isinstance(event, ApduReceived):
                            received.append(event.apdu)
            return received

        run([client.connect()])
        for request, _reply in pairs:
            if len(run(list(client.send_apdu(request)))) != 1:
                raise RuntimeError("HDLC replay preparation lost an APDU")
        run([client.disconnect()])

    def session(self) -> _HdlcSession:
        return _HdlcSession(self)


class _HdlcSession:
    def __init__(self, framing: HdlcFraming) -> None:
        self.link = HdlcClientConnection(framing.client_address, framing.server_address)
        self.chunks: Iterator[bytes] = iter(framing.chunks)

    def _until(self, done: Callable[[list[Any]], bool]) -> list[Any]:
        while True:
            events = self.link.receive_data(next(self.chunks))
            if done(events):
                return events

    def open(self) -> None:
        self.link.connect()
        self._until(lambda _events: self.link.connected)

    def send(self, apdu: bytes) -> None:
        self.link.send_apdu(apdu)

    def receive(self) -> bytes:
        events = self._until(lambda evs: any(isinstance(e, ApduReceived) for e in evs))
        return next(e.apdu for e in events if isinstance(e, ApduReceived))

    def close(self) -> None:
        self.link.disconnect()
        self._until(lambda _events: not self.link.connected)


class CoreReplay:
    """Our ClientConnection + framing through a recorded exchange. Call it: one session."""

    def __init__(self, recording: Recording, transport: str | None = None) -> None:
        self.recording = recording
        self.settings = recording.settings
        self.steps = plan(recording)
        kind = transport or recording.connection.transport
        self.framing: WrapperFraming | HdlcFraming = (
            WrapperFraming(recording) if kind == "wrapper" else HdlcFraming(recording)
        )
        self()  # fails loudly now if the replay does not follow the recording

    def __call__(self) -> None:
        settings = self.settings
        ciphered = settings.ciphered
        core = ClientConnection(settings)
        link = self.framing.session()
        counter = iter(range(1, 1 << 30))

        def exchange(request: bytes) -> Any:
            while True:
                if core.needs_protection(request):
                    request = core.protect(request, next(counter))
                link.send(request)
                reply = link.receive()
                if ciphered:
                    reply = core.unprotect(reply)
                outcome = core.receive(reply)
                if isinstance(outcome, Done):
                    return outcome.value
                request = outcome.apdu

        link.open()
        for step in self.steps:
            kind = step.kind
            if kind == "associate":
                request = core.associate(next(counter) if ciphered else None)
                if step.ctos is not None:
                    # Only the challenge the recorded meter answered verifies its f(CtoS).
                    core._ctos = step.ctos
                link.send(request)
                core.receive_aare(link.receive())  # HlsChallenged: the next step is the HLS reply
            elif kind == "hls":
                exchange(core.hls_reply(next(counter)))
            elif kind == "get":
                exchange(core.get(step.items))
            elif kind == "set":
                descriptor, value, access = step.items
                exchange(core.set(descriptor, value, access))
            elif kind == "action":
                method, parameters = step.items
                exchange(core.action(method, parameters))
            elif kind == "release":
                link.send(core.release())
                core.receive_rlre(link.receive())
        link.close()


# -- dlms-cosem's sans-IO connection ------------------------------------------------------------
@dataclass
class DlmsCosemReplay:
    """associate (+ HLS) + GET normal of each attribute + release with dlms-cosem 21.3.2's
    DlmsConnection, the meter's replies recorded from a real exchange with its own client."""

    connection: MeterConnection
    attributes: Sequence[tuple[int, str, int]]
    client_title: bytes = b"DLMSCOSM"
    replies: list[bytes] = field(default_factory=list)
    challenge: bytes | None = None
    invocation_counter: int = 1  # above any the meter has seen from this system title

    def _connection(self) -> Any:
        from dlms_cosem import enumerations
        from dlms_cosem.connection import DlmsConnection

        kwargs: dict[str, Any] = {"client_system_title": self.client_title}
        security_kind = self.connection.security
        if security_kind == "lls":
            kwargs.update(
                authentication_method=enumerations.AuthenticationMechanism.LLS,
                password=self.connection.password,
            )
        elif security_kind == "hls-gmac":
            kwargs.update(
                authentication_method=enumerations.AuthenticationMechanism.HLS_GMAC,
                global_encryption_key=self.connection.enc_key,
                global_authentication_key=self.connection.auth_key,
                security_suite=0,
                client_invocation_counter=self.invocation_counter,
            )
        return DlmsConnection(**kwargs)

    def _requests(self) -> list[Any]:
        from dlms_cosem import cosem, enumerations
        from dlms_cosem.protocol import xdlms

        return [
            xdlms.GetRequestNormal(
                cosem_attribute=cosem.CosemAttribute(
                    enumerations.CosemInterface(class_id),
                    cosem.Obis.from_string(obis),
                    attribute,
                )
            )
            for class_id, obis, attribute in self.attributes
        ]

    def _run(self, io: Callable[[bytes], bytes], challenge: bytes | None) -> None:
        """The exchange as dlms_cosem.clients.dlms_client.DlmsClient drives it."""
        from dlms_cosem import cosem, dlms_data, enumerations, state, utils
        from dlms_cosem.protocol import xdlms

        conn = self._connection()
        if challenge is not None:
            conn.client_to_meter_challenge = challenge

        def call(event: Any) -> Any:
            conn.receive_data(io(conn.send(event)))
            return conn.next_event()

        call(conn.get_aarq())
        if conn.state.current_state == state.SHOULD_SEND_HLS_SEVER_CHALLENGE_RESULT:
            reply = call(
                xdlms.ActionRequestNormal(
                    cosem_method=cosem.CosemMethod(
                        enumerations.CosemInterface.ASSOCIATION_LN, cosem.Obis(0, 0, 40, 0, 0), 1
                    ),
                    data=dlms_data.OctetStringData(conn.get_hls_reply()).to_bytes(),
                )
            )
            if not conn.hls_response_valid(utils.parse_as_dlms_data(reply.data)):
                raise RuntimeError("dlms-cosem replay: HLS reply did not verify")
        for request in self._requests():
            response = call(request)
            utils.parse_as_dlms_data(response.data)
        call(conn.get_rlrq())

    def live_session(self, challenge: bytes | None = None) -> list[bytes]:
        """One real exchange over dlms-cosem's blocking TCP wrapper transport; the replies.
        Invocation counters move on by 100 per session (a meter refuses ones it has seen)."""
        from dlms_cosem.clients.blocking_tcp_transport import BlockingTcpTransport

        assert self.connection.host is not None
        io = BlockingTcpTransport(
            host=self.connection.host,
            port=self.connection.port,
            client_logical_address=self.connection.client_sap,
            server_logical_address=self.connection.server_logical,
            timeout=10,
        )
        replies: list[bytes] = []

        def exchange(data: bytes) -> bytes:
            reply: bytes = io.send(data)
            replies.append(bytes(reply))
            return reply

        io.connect()
        try:
            self._run(exchange, challenge)
        finally:
            io.disconnect()
            self.invocation_counter += 100
        return replies

    def record(self) -> None:
        """Keep one real exchange's replies, with a fixed challenge, for the replay."""
        challenge = os.urandom(32) if self.connection.security == "hls-gmac" else None
        self.replies = self.live_session(challenge)
        self.challenge = challenge

    def __call__(self) -> None:
        replies = iter(self.replies)
        self._run(lambda _data: next(replies), self.challenge)
