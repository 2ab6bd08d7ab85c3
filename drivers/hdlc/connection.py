"""Sans-IO HDLC link state machines (IEC 62056-46 normal response mode), client and server.

Bytes go in through `receive_data`, events come out; frames to write come back as return values
(`connect`, `send_apdu`, `disconnect`, `on_timeout`) or as SendFrame events. The caller owns
sockets, serial ports and timers.

Both sides share the numbered-frame machinery (window, go-back-N, segmentation, reassembly)
of drivers/hdlc/numbered.py; what is here is each station's part: who opens and closes the
link, who holds the turn, and what each frame means in each state."""

from __future__ import annotations

from cosem_objects.errors import ProtocolError
from drivers.hdlc.addresses import HdlcAddress
from drivers.hdlc.events import (
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
from drivers.hdlc.frames import LLC_REQUEST, LLC_RESPONSE, FrameType, HdlcFrame
from drivers.hdlc.numbered import LinkState, NumberedLink
from drivers.hdlc.parameters import DEFAULT_MAX_INFO, HdlcParameters

DEFAULT_MAX_APDU_SIZE = 0x10000
DEFAULT_MAX_RETRIES = 3

# FRMR reason bits (third information byte).
_FRMR_INVALID_CONTROL = 0x01
_FRMR_INFO_TOO_LONG = 0x04
_FRMR_INVALID_NR = 0x08


def _as_address(value: HdlcAddress | int) -> HdlcAddress:
    return value if isinstance(value, HdlcAddress) else HdlcAddress(value, None, 1)


class HdlcClientConnection(NumberedLink):
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


class HdlcServerConnection(NumberedLink):
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
]
