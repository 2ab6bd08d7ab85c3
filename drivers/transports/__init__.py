"""Transports: whole APDUs over TCP (wrapper), HDLC over TCP and HDLC over serial lines."""

from drivers.transports.base import ApduTransport
from drivers.transports.hdlc_link import HdlcTransportBase
from drivers.transports.hdlc_serial import HdlcSerialTransport
from drivers.transports.hdlc_tcp import HdlcTcpTransport
from drivers.transports.serial_line import SerialLine, SerialSettings, get_serial_line
from drivers.transports.wrapper_tcp import TcpWrapperTransport

__all__ = [
    "ApduTransport",
    "HdlcSerialTransport",
    "HdlcTcpTransport",
    "HdlcTransportBase",
    "SerialLine",
    "SerialSettings",
    "TcpWrapperTransport",
    "get_serial_line",
]
