"""The protocol trail a field engineer reads at DEBUG: which APDU went out and came back (its
kind, invoke id, the invocation counter that protected it, its size, how long the answer
took) and which HDLC frames crossed the line (kind, N(S)/N(R), P/F).

Never the bytes themselves: a plain AARQ carries an LLS password and HLS challenges, and a
ciphered APDU's content is what the keys protect, so the trail names things and counts them
and nothing else. The fields travel as the stdlib record's `extra` (the head-end's logging
turns them into JSON fields, headend/observability/logs.py); the drivers stay on the stdlib
logger, so a program that uses them without configuring logging prints nothing.

Every function returns at once when DEBUG is off for the logger `drivers.trail`, so the
trail costs one level check per APDU in production."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from cosem_objects.errors import DecodeError
from drivers.hdlc.frames import HdlcFrame, HdlcFrameReader, parse_frame

__all__ = [
    "FrameSniffer",
    "apdu_kind",
    "apdu_received",
    "apdu_sent",
    "frames_sent",
    "hdlc_frame_kind",
    "log",
]

log = logging.getLogger("drivers.trail")

_TAGS = {
    0x01: "initiate-request",
    0x08: "initiate-response",
    0x0E: "confirmed-service-error",
    0x0F: "data-notification",
    0x60: "aarq",
    0x61: "aare",
    0x62: "rlrq",
    0x63: "rlre",
    0xC0: "get-request",
    0xC1: "set-request",
    0xC2: "event-notification",
    0xC3: "action-request",
    0xC4: "get-response",
    0xC5: "set-response",
    0xC7: "action-response",
    0xC8: "glo-get-request",
    0xC9: "glo-set-request",
    0xCB: "glo-action-request",
    0xCC: "glo-get-response",
    0xCD: "glo-set-response",
    0xCF: "glo-action-response",
    0xD8: "exception-response",
    0xDB: "general-glo-ciphering",
    0xDF: "general-ded-ciphering",
    0xE0: "general-block-transfer",
}
_SERVICES = {0xC0, 0xC1, 0xC3, 0xC4, 0xC5, 0xC7}  # tag, CHOICE, invoke-id-and-priority, ...
_CHOICES = {
    0xC0: {1: "normal", 2: "next", 3: "with-list"},
    0xC4: {1: "normal", 2: "with-datablock", 3: "with-list"},
    0xC1: {1: "normal", 2: "with-first-datablock", 3: "with-datablock", 4: "with-list"},
    0xC5: {1: "normal", 2: "datablock", 3: "last-datablock", 5: "with-list"},
    0xC3: {1: "normal", 2: "next-pblock", 3: "with-list", 4: "with-first-pblock"},
    0xC7: {1: "normal", 2: "with-pblock", 3: "with-list", 4: "next-pblock"},
}


def apdu_kind(apdu: bytes) -> str:
    """The APDU's name from its tag (and CHOICE), e.g. 'get-request-with-list'."""
    if not apdu:
        return "empty"
    name = _TAGS.get(apdu[0], f"tag-{apdu[0]:02x}")
    if apdu[0] in _CHOICES and len(apdu) > 1:
        name += "-" + _CHOICES[apdu[0]].get(apdu[1], str(apdu[1]))
    return name


def _invoke_id(apdu: bytes) -> int | None:
    if len(apdu) > 2 and apdu[0] in _SERVICES:
        return apdu[2] & 0x0F
    return None


def apdu_sent(apdu: bytes, *, ic: int | None = None) -> None:
    """`apdu` is the plain one (before ciphering); `ic` the counter that protects it."""
    if not log.isEnabledFor(logging.DEBUG):
        return
    fields = {"apdu": apdu_kind(apdu), "invoke_id": _invoke_id(apdu), "size": len(apdu)}
    if ic is not None:
        fields["invocation_counter"] = ic
    log.debug("apdu sent", extra=fields)


def apdu_received(apdu: bytes, *, elapsed_s: float) -> None:
    """`apdu` as deciphered (its plain kind); `elapsed_s` since the request went out."""
    if not log.isEnabledFor(logging.DEBUG):
        return
    fields = {
        "apdu": apdu_kind(apdu),
        "invoke_id": _invoke_id(apdu),
        "size": len(apdu),
        "elapsed_ms": round(elapsed_s * 1000, 1),
    }
    log.debug("apdu received", extra=fields)


def hdlc_frame_kind(frame: bytes | HdlcFrame) -> str:
    """e.g. 'I ns=1 nr=0 pf', 'RR nr=2', 'SNRM pf' ('?' for what does not parse)."""
    if isinstance(frame, HdlcFrame):
        parsed = frame
    else:
        try:
            parsed = parse_frame(frame)
        except DecodeError:
            return "?"
    parts = [parsed.frame_type.value]
    if parsed.send_seq is not None:
        parts.append(f"ns={parsed.send_seq}")
    if parsed.recv_seq is not None:
        parts.append(f"nr={parsed.recv_seq}")
    if parsed.segmented:
        parts.append("segmented")
    if parsed.poll_final:
        parts.append("pf")
    return " ".join(parts)


def frames_sent(frames: Iterable[bytes], *, peer: str) -> None:
    if not log.isEnabledFor(logging.DEBUG):
        return
    for frame in frames:
        log.debug("hdlc frame sent", extra={"hdlc": hdlc_frame_kind(frame), "peer": peer})


def hdlc_event(kind: str, *, peer: str, size: int | None = None) -> None:
    """What the link layer made of incoming frames (an APDU reassembled, DM, FRMR, ...)."""
    if not log.isEnabledFor(logging.DEBUG):
        return
    fields: dict[str, object] = {"hdlc": kind, "peer": peer}
    if size is not None:
        fields["size"] = size
    log.debug("hdlc event", extra=fields)


class FrameSniffer:
    """The frames in the bytes a link received, for the trail: a reader of its own (the link's
    sans-IO connection keeps parsing for itself), fed only while DEBUG is on."""

    __slots__ = ("peer", "reader")

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.reader = HdlcFrameReader()

    def __repr__(self) -> str:
        return f"FrameSniffer({self.peer!r})"

    def feed(self, data: bytes) -> None:
        if not log.isEnabledFor(logging.DEBUG):
            return
        for item in self.reader.feed_events(data):
            if isinstance(item, HdlcFrame):
                kind = hdlc_frame_kind(item)
                log.debug("hdlc frame received", extra={"hdlc": kind, "peer": self.peer})
