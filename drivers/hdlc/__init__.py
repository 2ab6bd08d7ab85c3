"""HDLC (IEC 62056-46): CRC, addresses, frames, SNRM/UA parameters and sans-IO link machines."""

from drivers.hdlc.addresses import HdlcAddress, decode_address, encode_address
from drivers.hdlc.connection import HdlcClientConnection, HdlcServerConnection
from drivers.hdlc.crc import crc16_x25
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
from drivers.hdlc.frames import FrameType, HdlcFrame, HdlcFrameReader, parse_frame
from drivers.hdlc.numbered import LinkState
from drivers.hdlc.parameters import HdlcParameters
from drivers.hdlc.stream import HdlcStreamJoiner, JoinedApdu, JoinError, OtherFrame

__all__ = [
    "ApduReceived",
    "BadFrame",
    "Connected",
    "Disconnected",
    "FrameRejected",
    "FrameType",
    "HdlcAddress",
    "HdlcClientConnection",
    "HdlcEvent",
    "HdlcFrame",
    "HdlcFrameReader",
    "HdlcParameters",
    "HdlcServerConnection",
    "HdlcStreamJoiner",
    "JoinError",
    "JoinedApdu",
    "LinkFailed",
    "LinkState",
    "ModeRejected",
    "OtherFrame",
    "ProtocolViolation",
    "SendFrame",
    "UiReceived",
    "crc16_x25",
    "decode_address",
    "encode_address",
    "parse_frame",
]
