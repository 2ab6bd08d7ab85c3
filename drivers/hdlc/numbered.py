"""What the two HDLC stations share: the link state, and numbered-information transfer.

N(S)/N(R) modulo 8, a send window with P/F on the last frame of each burst, go-back-N
retransmission, segmentation to the negotiated information size with the LLC header in the
first segment only, and bounded reassembly. The client and server state machines
(drivers/hdlc/connection.py) decide when to send and what a frame means in their state; this
is the sequence bookkeeping under both."""

from __future__ import annotations

import enum
from collections import deque

from cosem_objects.errors import ProtocolError
from drivers.hdlc.addresses import HdlcAddress
from drivers.hdlc.events import ApduReceived, BadFrame, HdlcEvent, ProtocolViolation
from drivers.hdlc.frames import LLC_REQUEST, LLC_RESPONSE, FrameType, HdlcFrame, HdlcFrameReader
from drivers.hdlc.parameters import MAX_INFO_LIMIT, MAX_WINDOW, HdlcParameters

_LLCS = (LLC_REQUEST, LLC_RESPONSE)


class LinkState(enum.Enum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTING = "disconnecting"


class NumberedLink:
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
