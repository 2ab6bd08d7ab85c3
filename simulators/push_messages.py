"""What a simulated meter pushes, as bytes: the DataNotification of a Push setup, ciphered when
the meter's security is hls-gmac, framed for the push transport. No I/O (simulators/push_agent.py
sends these).

* Ciphering: general-glo-ciphering (0xDB), security control 0x30 (authenticated and
  encrypted), the meter's system title, its global encryption and authentication keys and its
  rising invocation counter, as IDIS meters cipher pushes outside an association.
* Wrapper (TCP and UDP): source wPort = the meter's logical device, destination wPort = the
  push client SAP.
* HDLC: UI frames from the meter's HDLC address to the push client SAP, the LLC header
  E6 E7 00 in the first, split into segments (format field S bit) of at most `max_info`
  bytes of information."""

from __future__ import annotations

from cosem_objects import security
from cosem_objects.apdu.notifications import DataNotification
from cosem_objects.data import Data
from cosem_objects.obis import Obis
from drivers.hdlc import FrameType, HdlcAddress, HdlcFrame
from drivers.hdlc.frames import LLC_RESPONSE
from drivers.wrapper import encode_wrapper
from simulators.config import MeterConfig, Security
from simulators.event_logs import EVENT_CODE_OBJECTS, MeterEvent
from simulators.meter import SimMeter
from simulators.objects import services
from simulators.objects.push_setup import PUSH_SETUP_CLASS, PushSetupDef

PUSH_CLIENT_SAP = 0x66
"""The push client SAP (102) of IDIS and other companion specifications (dlms-notes.md 7.2)."""
SC_AUTHENTICATED_ENCRYPTED = 0x30


def push_body(meter: SimMeter, setup: PushSetupDef, event: MeterEvent | None = None) -> Data:
    """The values of the push_object_list, in order (see simulators/objects/push_setup.py)."""
    values: list[Data] = []
    event_code_object = None if event is None else EVENT_CODE_OBJECTS[event.log]
    for column in setup.objects:
        if column.class_id == PUSH_SETUP_CLASS and column.attribute == 1:
            values.append(Data.octet_string(column.obis.to_bytes()))
        elif event is not None and column.class_id == 8:
            values.append(Data.octet_string(meter.date_time(event.time).to_bytes()))
        elif column.obis in _EVENT_CODE_OBJECTS:
            if event is not None and column.obis == event_code_object:
                values.append(Data.unsigned(event.code))
            else:
                values.append(Data.null())  # no event of that log in this push
        else:
            value = services.get_attribute(meter, column.class_id, column.obis, column.attribute)
            values.append(value if isinstance(value, Data) else Data.null())
    return Data.structure(values)


_EVENT_CODE_OBJECTS: frozenset[Obis] = frozenset(EVENT_CODE_OBJECTS.values())


def push_apdu(
    meter: SimMeter, setup: PushSetupDef, invoke_id: int, event: MeterEvent | None = None
) -> bytes:
    """The APDU to send: a DataNotification, general-glo-ciphered under hls-gmac."""
    notification = DataNotification(
        invoke_id & 0x00FFFFFF,
        meter.date_time(meter.meter_time()),
        push_body(meter, setup, event),
    )
    plain = notification.to_bytes()
    config = meter.config
    if config.security is not Security.HLS_GMAC:
        return plain
    keys = security.SecurityKeys(config.enc_key, config.auth_key)
    return security.wrap_general_glo(
        plain, SC_AUTHENTICATED_ENCRYPTED, config.system_title, meter.next_server_ic(), keys
    )


def wrapper_push(config: MeterConfig, apdu: bytes) -> bytes:
    return encode_wrapper(config.server_logical, PUSH_CLIENT_SAP, apdu)


def hdlc_push(config: MeterConfig, apdu: bytes, max_info: int) -> list[bytes]:
    """UI frames carrying `apdu`, segmented when LLC + APDU is longer than `max_info`."""
    if max_info < 4:
        raise ValueError("HDLC push frames need room for at least 4 information bytes")
    source = HdlcAddress.server(config.server_logical, config.server_physical)
    destination = HdlcAddress.client(PUSH_CLIENT_SAP)
    message = LLC_RESPONSE + apdu
    parts = [message[i : i + max_info] for i in range(0, len(message), max_info)]
    return [
        HdlcFrame.make(
            FrameType.UI,
            destination,
            source,
            segmented=index < len(parts) - 1,
            info=part,
        ).to_bytes()
        for index, part in enumerate(parts)
    ]
