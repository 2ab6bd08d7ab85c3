"""Sans-IO HDLC link state machines (IEC 62056-46 normal response mode), client and server.

Bytes go in through `receive_data`, events come out; frames to write come back as return values
(`connect`, `send_apdu`, `disconnect`, `on_timeout`) or as SendFrame events. The caller owns
sockets, serial ports and timers.

Both sides share the numbered-frame machinery: N(S)/N(R) modulo 8, a send window with P/F on
the last frame of each burst, go-back-N retransmission, segmentation to the negotiated
information size with the LLC header in the first segment only, and bounded reassembly."""

from __future__ import annotations

import enum
from collections import deque

from cosem_objects.errors import ProtocolError
from drivers.hdlc.addresses import HdlcAddress
from drivers.hdlc.events import (
    ApduReceived,
    BadFrame,
    Connected,
    Disconnected,
    FrameRejected,
    HdlcEvent,
    LinkFailed,
    ModeRejected,
    ProtocolViolation,
    SendFrame,
    UiReceived,
)
from drivers.hdlc.frames import (
    LLC_REQUEST,
    LLC_RESPONSE,
    FrameType,
    HdlcFrame,
    HdlcFrameReader,
)
from drivers.hdlc.parameters import DEFAULT_MAX_INFO, MAX_INFO_LIMIT, MAX_WINDOW, HdlcParameters

DEFAULT_MAX_APDU_SIZE = 0x10000
DEFAULT_MAX_RETRIES = 3
_LLCS = (LLC_REQUEST, LLC_RESPONSE)

# FRMR reason bits (third information byte).
_FRMR_INVALID_CONTROL = 0x01
_FRMR_INFO_TOO_LONG = 0x04
_FRMR_INVALID_NR = 0x08


class LinkState(enum.Enum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTING = "disconnecting"


def _as_address(value: HdlcAddress | int) -> HdlcAddress:
    return value if isinstance(value, HdlcAddress) else HdlcAddress(value, None, 1)


class _HdlcLink:
    """Numbered-information transfer shared by both sides."""

    _tx_llc: bytes

    def __init__(
        self,
        local: HdlcAddress,
        peer: HdlcAddress,
        *,
        max_info_tx: int,
        max_info_rx: int,
        window: int,
        max_apdu_size: int,
    ) -> None:
        if not 1 <= window <= MAX_WINDOW:
            raise ValueError(f"window must be between 1 and {MAX_WINDOW}")
        if not 8 <= max_info_tx <= MAX_INFO_LIMIT or not 8 <= max_info_rx <= MAX_INFO_LIMIT:
            raise ValueError(f"max_info sizes must be between 8 and {MAX_INFO_LIMIT}")
        self.local = local
        self.peer = peer
        self.proposal = HdlcParameters(max_info_tx, max_info_rx, window, window)
        self.params = HdlcParameters()
        self.max_apdu_size = max_apdu_size
        self.state = LinkState.DISCONNECTED
        self.reader = HdlcFrameReader()
        self.ignored_frames = 0
        self._reset_sequence()

    # -- state -------------------------------------------------------------------------
    def _reset_sequence(self) -> None:
        self._vs = 0
        self._vr = 0
        self._unacked: list[tuple[int, bytes, bool]] = []  # (N(S), info, segmented)
        self._pending: deque[tuple[bytes, bool]] = deque()  # (info, segmented), not yet sent
        self._rx_parts: list[bytes] = []
        self._rx_size = 0
        self._rx_overflow = False

    @property
    def connected(self) -> bool:
        return self.state is LinkState.CONNECTED

    @property
    def all_sent(self) -> bool:
        """Every segment of the queued APDUs has gone out at least once."""
        return not self._pending

    @property
    def send_seq(self) -> int:
        return self._vs

    @property
    def recv_seq(self) -> int:
        return self._vr

    # -- building frames -----------------------------------------------------------------
    def _frame(self, frame_type: FrameType, *, pf: bool = True, info: bytes = b"") -> bytes:
        return HdlcFrame.make(
            frame_type, self.peer, self.local, poll_final=pf, recv_seq=self._vr, info=info
        ).to_bytes()

    def _i_frame(self, ns: int, info: bytes, segmented: bool, pf: bool) -> bytes:
        return HdlcFrame.make(
            FrameType.I,
            self.peer,
            self.local,
            poll_final=pf,
            send_seq=ns,
            recv_seq=self._vr,
            segmented=segmented,
            info=info,
        ).to_bytes()

    def _queue_apdu(self, apdu: bytes) -> None:
        if not self.connected:
            raise ProtocolError("HDLC link is not connected")
        message = self._tx_llc + bytes(apdu)
        size = self.params.max_info_tx
        parts = [message[i : i + size] for i in range(0, len(message), size)]
        for index, part in enumerate(parts):
            self._pending.append((part, index < len(parts) - 1))

    def _send_window(self) -> list[bytes]:
        """Send queued segments while the window allows; P/F on the last one."""
        burst: list[tuple[int, bytes, bool]] = []
        while self._pending and len(self._unacked) + len(burst) < self.params.window_tx:
            info, segmented = self._pending.popleft()
            burst.append((self._vs, info, segmented))
            self._vs = (self._vs + 1) % 8
        self._unacked.extend(burst)
        last = len(burst) - 1
        return [
            self._i_frame(ns, info, segmented, pf=index == last)
            for index, (ns, info, segmented) in enumerate(burst)
        ]

    def _retransmit(self) -> list[bytes]:
        """Go-back-N: every unacknowledged frame again, with the current N(R)."""
        last = len(self._unacked) - 1
        return [
            self._i_frame(ns, info, segmented, pf=index == last)
            for index, (ns, info, segmented) in enumerate(self._unacked)
        ]

    # -- receiving numbered frames ---------------------------------------------------------
    def _nr_valid(self, nr: int) -> bool:
        base = (self._vs - len(self._unacked)) % 8
        return (nr - base) % 8 <= len(self._unacked)

    def _acknowledge(self, nr: int) -> None:
        base = (self._vs - len(self._unacked)) % 8
        del self._unacked[: (nr - base) % 8]

    def _is_duplicate(self, ns: int) -> bool:
        """N(S) of a frame we already took (a retransmission after a lost acknowledgement)."""
        behind = (self._vr - 1 - ns) % 8
        return behind < max(self.params.window_rx, 1)

    def _take_info(self, frame: HdlcFrame, events: list[HdlcEvent]) -> None:
        """Add an in-sequence I frame's information to the message being reassembled."""
        info = frame.info
        if not self._rx_parts and not self._rx_overflow and info[:3] in _LLCS:
            info = info[3:]
        if not self._rx_overflow:
            self._rx_size += len(info)
            if self._rx_size > self.max_apdu_size:
                self._rx_overflow = True
                self._rx_parts.clear()
                events.append(
                    ProtocolViolation(f"APDU longer than {self.max_apdu_size} bytes, dropped")
                )
            else:
                self._rx_parts.append(info)
        if not frame.segmented:
            if not self._rx_overflow:
                events.append(ApduReceived(b"".join(self._rx_parts)))
            self._rx_parts = []
            self._rx_size = 0
            self._rx_overflow = False

    def _addressed_to_us(self, frame: HdlcFrame) -> bool:
        raise NotImplementedError

    def receive_data(self, data: bytes) -> list[HdlcEvent]:
        """Feed bytes from the line; returns events in order (SendFrame = write these bytes)."""
        events: list[HdlcEvent] = []
        for item in self.reader.feed_events(data):
            if isinstance(item, BadFrame):
                events.append(item)
            elif self._addressed_to_us(item):
                self._on_frame(item, events)
            else:
                self.ignored_frames += 1
        return events

    def _on_frame(self, frame: HdlcFrame, events: list[HdlcEvent]) -> None:
        raise NotImplementedError


class HdlcClientConnection(_HdlcLink):
    """The primary station: opens the link (SNRM), sends requests, polls for answers."""

    _tx_llc = LLC_REQUEST

    def __init__(
        self,
        client_address: HdlcAddress | int,
        server_address: HdlcAddress | int,
        *,
        max_info_rx: int = DEFAULT_MAX_INFO,
        max_info_tx: int = DEFAULT_MAX_INFO,
        window: int = 1,
        max_apdu_size: int = DEFAULT_MAX_APDU_SIZE,
        max_retries: int = DEFAULT_MAX_RETRIES,
    ) -> None:
        super().__init__(
            _as_address(client_address),
            _as_address(server_address),
            max_info_tx=max_info_tx,
            max_info_rx=max_info_rx,
            window=window,
            max_apdu_size=max_apdu_size,
        )
        self.max_retries = max_retries
        self._retries = 0
        self._awaiting_final = False

    def connect(self) -> bytes:
        """The SNRM that opens (or re-opens) the link. Parameters only when not all default."""
        self._reset_sequence()
        self.reader.clear()
        self.state = LinkState.CONNECTING
        self._retries = 0
        return self._snrm()

    def _snrm(self) -> bytes:
        info = b"" if self.proposal.is_default else self.proposal.to_bytes()
        return self._frame(FrameType.SNRM, info=info)

    def disconnect(self) -> bytes:
        """The DISC that closes the link; the answer (UA or DM) gives Disconnected."""
        self.state = LinkState.DISCONNECTING
        self._retries = 0
        self._pending.clear()
        self._unacked.clear()
        return self._frame(FrameType.DISC)

    def send_apdu(self, apdu: bytes) -> list[bytes]:
        """Frames to write now; later segments follow as SendFrame events when the server acks."""
        self._queue_apdu(apdu)
        if self._awaiting_final:
            return []
        frames = self._send_window()
        if frames:
            self._awaiting_final = True
        return frames

    def on_timeout(self) -> list[bytes]:
        """No answer in time: what to send again. Raises LinkFailed after max_retries."""
        if self.state is LinkState.DISCONNECTED:
            return []
        self._retries += 1
        if self._retries > self.max_retries:
            raise LinkFailed(f"no valid answer from the server after {self.max_retries} retries")
        if self.state is LinkState.CONNECTING:
            return [self._snrm()]
        if self.state is LinkState.DISCONNECTING:
            return [self._frame(FrameType.DISC)]
        self._awaiting_final = True
        if self._unacked:
            return self._retransmit()
        return [self._frame(FrameType.RR)]

    def _addressed_to_us(self, frame: HdlcFrame) -> bool:
        dst = frame.dst
        return (
            dst.upper == self.local.upper
            and (dst.lower is None or dst.lower == self.local.lower)
            and frame.src.same_station(self.peer)
        )

    def _on_frame(self, frame: HdlcFrame, events: list[HdlcEvent]) -> None:
        kind = frame.frame_type
        if kind is FrameType.UI:
            events.append(UiReceived(frame.src, frame.info))
            return
        state = self.state
        if state is LinkState.CONNECTING:
            if kind is FrameType.UA:
                self._retries = 0
                try:
                    peer = HdlcParameters.from_bytes(frame.info)
                except ProtocolError as exc:
                    events.append(BadFrame(f"UA parameters: {exc}"))
                    return
                self.params = self.proposal.negotiate(peer)
                self.state = LinkState.CONNECTED
                events.append(Connected(self.params))
            elif kind is FrameType.DM:
                self.state = LinkState.DISCONNECTED
                events.append(ModeRejected(frame.info))
            elif kind is FrameType.FRMR:
                self.state = LinkState.DISCONNECTED
                events.append(FrameRejected(frame.info))
            return
        if state is LinkState.DISCONNECTING:
            if kind in (FrameType.UA, FrameType.DM):
                self.state = LinkState.DISCONNECTED
                events.append(Disconnected())
            return
        if state is LinkState.DISCONNECTED:
            return
        # Connected.
        if kind is FrameType.DM:
            self.state = LinkState.DISCONNECTED
            self._awaiting_final = False
            events.append(ModeRejected(frame.info))
        elif kind is FrameType.FRMR:
            self.state = LinkState.DISCONNECTED
            self._awaiting_final = False
            events.append(FrameRejected(frame.info))
        elif kind is FrameType.I:
            self._on_i_frame(frame, events)
        elif kind in (FrameType.RR, FrameType.RNR):
            self._on_supervisory(frame, events)
        # A late UA (to a repeated SNRM) or a stray SNRM/DISC from a peer: nothing to do.

    def _on_i_frame(self, frame: HdlcFrame, events: list[HdlcEvent]) -> None:
        assert frame.send_seq is not None and frame.recv_seq is not None
        if frame.send_seq != self._vr:
            if self._is_duplicate(frame.send_seq):
                self._retries = 0
                if self._nr_valid(frame.recv_seq):
                    self._acknowledge(frame.recv_seq)
            else:
                events.append(
                    ProtocolViolation(f"I frame N(S)={frame.send_seq}, expected {self._vr}")
                )
            if frame.poll_final:
                # Tell the server where we are; it goes back and resends from there.
                self._awaiting_final = True
                events.append(SendFrame(self._frame(FrameType.RR)))
            return
        if not self._nr_valid(frame.recv_seq):
            events.append(
                ProtocolViolation(f"I frame N(R)={frame.recv_seq} acknowledges unsent frames")
            )
            return
        self._retries = 0
        self._acknowledge(frame.recv_seq)
        self._vr = (self._vr + 1) % 8
        self._take_info(frame, events)
        if frame.poll_final:
            self._awaiting_final = False
            self._after_final(events, more_to_receive=frame.segmented)

    def _on_supervisory(self, frame: HdlcFrame, events: list[HdlcEvent]) -> None:
        assert frame.recv_seq is not None
        if not self._nr_valid(frame.recv_seq):
            events.append(
                ProtocolViolation(f"{frame.frame_type.value} N(R)={frame.recv_seq} out of range")
            )
            return
        self._retries = 0
        self._acknowledge(frame.recv_seq)
        if frame.poll_final:
            self._awaiting_final = False
            if frame.frame_type is FrameType.RR:
                self._after_final(events, more_to_receive=False)

    def _after_final(self, events: list[HdlcEvent], *, more_to_receive: bool) -> None:
        """The server handed the turn back: ask for more, resend or send on."""
        if more_to_receive:
            frames = [self._frame(FrameType.RR)]
        elif self._unacked:
            frames = self._retransmit()
        else:
            frames = self._send_window()
        if frames:
            self._awaiting_final = True
            events.extend(SendFrame(data) for data in frames)


class HdlcServerConnection(_HdlcLink):
    """The secondary station (meter side): answers SNRM/DISC, receives requests, sends replies.

    Frames for other server addresses are ignored, so several server connections can share
    one multi-drop line, each fed every byte."""

    _tx_llc = LLC_RESPONSE

    def __init__(
        self,
        server_address: HdlcAddress | int,
        *,
        max_info_rx: int = DEFAULT_MAX_INFO,
        max_info_tx: int = DEFAULT_MAX_INFO,
        window: int = 1,
        max_apdu_size: int = DEFAULT_MAX_APDU_SIZE,
    ) -> None:
        address = _as_address(server_address)
        super().__init__(
            address,
            HdlcAddress(0, None, 1),
            max_info_tx=max_info_tx,
            max_info_rx=max_info_rx,
            window=window,
            max_apdu_size=max_apdu_size,
        )
        self.server_address = address
        self._has_turn = False

    @property
    def client_address(self) -> HdlcAddress | None:
        return self.peer if self.connected else None

    def send_apdu(self, apdu: bytes) -> list[bytes]:
        """Frames to write now (when the client gave us the turn); later ones follow its RRs."""
        self._queue_apdu(apdu)
        if not self._has_turn:
            return []
        return self._take_turn_send()

    def _take_turn_send(self) -> list[bytes]:
        frames = self._send_window()
        if frames:
            self._has_turn = False
        return frames

    def _addressed_to_us(self, frame: HdlcFrame) -> bool:
        return frame.dst.same_station(self.server_address)

    def _reply(self, events: list[HdlcEvent], frame_type: FrameType, info: bytes = b"") -> None:
        events.append(SendFrame(self._frame(frame_type, info=info)))

    def _dm_to(self, frame: HdlcFrame, events: list[HdlcEvent]) -> None:
        reply = HdlcFrame.make(FrameType.DM, frame.src, frame.dst, poll_final=frame.poll_final)
        events.append(SendFrame(reply.to_bytes()))

    def _frmr(self, frame: HdlcFrame, reason_bits: int, events: list[HdlcEvent]) -> None:
        info = bytes((frame.control, (self._vr << 5) | (self._vs << 1), reason_bits))
        self._reply(events, FrameType.FRMR, info)

    def _on_frame(self, frame: HdlcFrame, events: list[HdlcEvent]) -> None:
        kind = frame.frame_type
        if kind is FrameType.SNRM:
            self._on_snrm(frame, events)
            return
        if kind is FrameType.UI:
            return
        if not self.connected or not frame.src.same_station(self.peer):
            # Out of state (I/RR before SNRM, DISC when not connected) or another client.
            if kind in (FrameType.I, FrameType.RR, FrameType.RNR, FrameType.DISC):
                self._dm_to(frame, events)
            return
        if kind is FrameType.DISC:
            self._reply(events, FrameType.UA)
            self.state = LinkState.DISCONNECTED
            self._has_turn = False
            self._reset_sequence()
            events.append(Disconnected())
        elif kind is FrameType.I:
            self._on_i_frame(frame, events)
        elif kind in (FrameType.RR, FrameType.RNR):
            self._on_supervisory(frame, events)
        else:  # UA, DM, FRMR from a client make no sense in NRM.
            self._frmr(frame, _FRMR_INVALID_CONTROL, events)

    def _on_snrm(self, frame: HdlcFrame, events: list[HdlcEvent]) -> None:
        try:
            peer = HdlcParameters.from_bytes(frame.info)
        except ProtocolError as exc:
            events.append(BadFrame(f"SNRM parameters: {exc}"))
            self._dm_to(frame, events)
            return
        self._reset_sequence()
        self.peer = frame.src
        self.local = frame.dst  # answer in the address form the client used
        self.params = self.proposal.negotiate(peer)
        self.state = LinkState.CONNECTED
        self._has_turn = False
        self._reply(events, FrameType.UA, self.params.to_bytes())
        events.append(Connected(self.params))

    def _on_i_frame(self, frame: HdlcFrame, events: list[HdlcEvent]) -> None:
        assert frame.send_seq is not None and frame.recv_seq is not None
        if len(frame.info) > self.params.max_info_rx:
            events.append(ProtocolViolation("I frame information field longer than negotiated"))
            self._frmr(frame, _FRMR_INFO_TOO_LONG, events)
            return
        if frame.send_seq != self._vr:
            duplicate = self._is_duplicate(frame.send_seq)
            if duplicate and self._nr_valid(frame.recv_seq):
                self._acknowledge(frame.recv_seq)
            if not duplicate:
                events.append(
                    ProtocolViolation(f"I frame N(S)={frame.send_seq}, expected {self._vr}")
                )
            if frame.poll_final:
                self._has_turn = True
                self._answer_poll(events)
            return
        if not self._nr_valid(frame.recv_seq):
            events.append(
                ProtocolViolation(f"I frame N(R)={frame.recv_seq} acknowledges unsent frames")
            )
            self._frmr(frame, _FRMR_INVALID_NR, events)
            return
        self._acknowledge(frame.recv_seq)
        self._vr = (self._vr + 1) % 8
        self._take_info(frame, events)
        if frame.poll_final:
            self._has_turn = True
            if frame.segmented:
                self._has_turn = False
                self._reply(events, FrameType.RR)
            elif self._unacked or self._pending:
                self._answer_poll(events)
            # else: keep the turn until the application calls send_apdu.

    def _on_supervisory(self, frame: HdlcFrame, events: list[HdlcEvent]) -> None:
        assert frame.recv_seq is not None
        if not self._nr_valid(frame.recv_seq):
            events.append(
                ProtocolViolation(
                    f"{frame.frame_type.value} N(R)={frame.recv_seq} acknowledges unsent frames"
                )
            )
            self._frmr(frame, _FRMR_INVALID_NR, events)
            return
        self._acknowledge(frame.recv_seq)
        if frame.poll_final:
            self._has_turn = True
            if frame.frame_type is FrameType.RNR:
                self._has_turn = False
                self._reply(events, FrameType.RR)
            else:
                self._answer_poll(events)

    def _answer_poll(self, events: list[HdlcEvent]) -> None:
        """We hold the turn: resend what is unacknowledged, send on, or say RR."""
        if self._unacked:
            frames = self._retransmit()
            self._has_turn = False
        else:
            frames = self._take_turn_send()
        if frames:
            events.extend(SendFrame(data) for data in frames)
        else:
            self._has_turn = False
            self._reply(events, FrameType.RR)


__all__ = [
    "DEFAULT_MAX_APDU_SIZE",
    "DEFAULT_MAX_RETRIES",
    "HdlcClientConnection",
    "HdlcServerConnection",
    "LinkState",
]
