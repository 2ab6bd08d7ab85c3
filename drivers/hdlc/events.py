"""What the sans-IO HDLC connections report. Frames to write come out as SendFrame events."""

from __future__ import annotations

from dataclasses import dataclass

from cosem_objects.errors import ProtocolError
from drivers.hdlc.addresses import HdlcAddress
from drivers.hdlc.frames import BadFrame
from drivers.hdlc.parameters import HdlcParameters

__all__ = [
    "ApduReceived",
    "BadFrame",
    "Connected",
    "Disconnected",
    "FrameRejected",
    "HdlcEvent",
    "LinkFailed",
    "ModeRejected",
    "ProtocolViolation",
    "SendFrame",
    "UiReceived",
]


@dataclass(frozen=True, slots=True)
class Connected:
    """The link is up; `params` are this side's effective (negotiated) limits."""

    params: HdlcParameters


@dataclass(frozen=True, slots=True)
class ApduReceived:
    """A whole APDU, reassembled from its segments, LLC header removed."""

    apdu: bytes


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The link went down in order (UA or DM to our DISC, or the peer's DISC)."""


@dataclass(frozen=True, slots=True)
class ModeRejected:
    """The peer answered DM: it is not (or no longer) in connected mode."""

    info: bytes = b""


@dataclass(frozen=True, slots=True)
class FrameRejected:
    """The peer answered FRMR: it found one of our frames invalid; the link needs a reset."""

    info: bytes = b""


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    """A well-formed frame that breaks the link rules: wrong N(S)/N(R), oversized APDU, ..."""

    reason: str


@dataclass(frozen=True, slots=True)
class SendFrame:
    """A frame the caller must write to the line, in order with the other SendFrame events."""

    data: bytes


@dataclass(frozen=True, slots=True)
class UiReceived:
    """An unnumbered-information frame (e.g. a push on a HAN port)."""

    src: HdlcAddress
    info: bytes


HdlcEvent = (
    Connected
    | ApduReceived
    | Disconnected
    | ModeRejected
    | FrameRejected
    | ProtocolViolation
    | SendFrame
    | UiReceived
    | BadFrame
)


class LinkFailed(ProtocolError):
    """No valid answer after the allowed number of retransmissions."""
