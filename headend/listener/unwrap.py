"""From one APDU to a notification and the meter that sent it (sans-IO).

Block transfer is joined first (per sender, by the caller's GbtReassembler), then ciphering
is taken off: general-glo-ciphering (0xDB) and general-ded-ciphering (0xDC) carry the
sender's system title, which names the meter, and the GCM tag must verify with that meter's
keys, so a ciphered push is never believed on the strength of the title alone; a
service-specific glo-event-notification (0xCA) carries no title and needs a sender already
known on the connection. Encryption without authentication is refused: anyone could have
made it. What is left must be a DataNotification or an EventNotificationRequest.

The invocation counter is returned, not judged: whether it is above the last one accepted
is the database's to say (storage/push_counters.py), atomically across connections."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from cosem_objects.apdu.notifications import (
    DATA_NOTIFICATION,
    EVENT_NOTIFICATION_REQUEST,
    DataNotification,
    EventNotificationRequest,
)
from cosem_objects.errors import ProtocolError, SecurityError
from cosem_objects.security import (
    GeneralGloCiphering,
    GloCipheredApdu,
    SecurityControl,
    decrypt,
)
from headend.listener.directory import Directory, KnownMeter

__all__ = [
    "BAD_TAG",
    "MALFORMED",
    "UNKNOWN_SENDER",
    "Notification",
    "Opened",
    "Rejected",
    "open_apdu",
]

GENERAL_DED_CIPHERING: Final = 0xDC
GLO_EVENT_NOTIFICATION: Final = 0xCA

MALFORMED: Final = "malformed"
UNKNOWN_SENDER: Final = "unknown_sender"
BAD_TAG: Final = "bad_tag"

Notification = DataNotification | EventNotificationRequest


@dataclass(frozen=True, slots=True)
class Opened:
    notification: Notification
    meter: KnownMeter | None  # None: a plain push, to be named by its address or body
    invocation_counter: int | None = None  # set for a ciphered push (authenticated)
    system_title: bytes | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    kind: str  # MALFORMED | UNKNOWN_SENDER | BAD_TAG
    reason: str
    system_title: bytes | None = None
    meter: KnownMeter | None = None


def _plain(apdu: bytes) -> Notification:
    if not apdu:
        raise ProtocolError("empty APDU")
    tag = apdu[0]
    if tag == DATA_NOTIFICATION:
        return DataNotification.from_bytes(apdu)
    if tag == EVENT_NOTIFICATION_REQUEST:
        return EventNotificationRequest.from_bytes(apdu)
    raise ProtocolError(f"APDU 0x{tag:02X} is not a data- or event-notification")


def _general(apdu: bytes) -> GeneralGloCiphering:
    """0xDB and 0xDC share a layout; parse a 0xDC as a 0xDB with the tag swapped."""
    if apdu[0] == GENERAL_DED_CIPHERING:
        apdu = b"\xdb" + apdu[1:]
    return GeneralGloCiphering.from_bytes(apdu)


def _decrypt(meter: KnownMeter, title: bytes, sc: int, ic: int, payload: bytes) -> bytes | Rejected:
    if meter.keys is None:
        return Rejected(BAD_TAG, "ciphered push from a meter without keys", title, meter)
    control = SecurityControl.from_byte(sc)
    if not control.authenticated or meter.keys.authentication_key is None:
        return Rejected(BAD_TAG, "ciphered push without authentication", title, meter)
    try:
        return decrypt(sc, title, ic, meter.keys, payload)
    except SecurityError as exc:
        return Rejected(BAD_TAG, str(exc), title, meter)


def open_apdu(
    apdu: bytes, directory: Directory, known: KnownMeter | None = None
) -> Opened | Rejected:
    """`known`: the meter this connection already proved to be (for 0xCA, which names none)."""
    try:
        if not apdu:
            return Rejected(MALFORMED, "empty APDU")
        tag = apdu[0]
        if tag in (0xDB, GENERAL_DED_CIPHERING):
            ciphered = _general(apdu)
            title = ciphered.system_title
            meter = directory.by_system_title(title)
            if meter is None:
                return Rejected(UNKNOWN_SENDER, "system title not in the inventory", title)
            plain = _decrypt(
                meter,
                title,
                ciphered.security_control,
                ciphered.invocation_counter,
                ciphered.payload,
            )
            if isinstance(plain, Rejected):
                return plain
            return Opened(_plain(plain), meter, ciphered.invocation_counter, title)
        if tag == GLO_EVENT_NOTIFICATION:
            glo = GloCipheredApdu.from_bytes(apdu)
            if known is None or directory.get(known.meter_id) is None:
                return Rejected(UNKNOWN_SENDER, "glo-event-notification from an unnamed sender")
            own = directory.system_title_of(known.meter_id)
            if own is None:
                return Rejected(UNKNOWN_SENDER, "no system title for the meter", None, known)
            plain = _decrypt(known, own, glo.security_control, glo.invocation_counter, glo.payload)
            if isinstance(plain, Rejected):
                return plain
            return Opened(_plain(plain), known, glo.invocation_counter, own)
        return Opened(_plain(apdu), None)
    except ProtocolError as exc:
        return Rejected(MALFORMED, str(exc))
    except (ValueError, IndexError) as exc:  # a decoder that missed a bound: still malformed
        return Rejected(MALFORMED, f"{type(exc).__name__}: {exc}")
