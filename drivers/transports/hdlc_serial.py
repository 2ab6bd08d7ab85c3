"""HDLC over a serial line (RS-232, RS-485 multi-drop, optical probe), optionally opened with
IEC 62056-21 mode E."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from cosem_objects.errors import DecodeError
from drivers.errors import LinkProtocolError, LinkTimeout
from drivers.iec21 import INITIAL_BAUDRATE, Identification, ModeEHandshake, with_even_parity
from drivers.transports.hdlc_link import HdlcTransportBase
from drivers.transports.serial_line import SerialLine, SerialSettings, get_serial_line
from drivers.transports.stream import ByteStream

log = logging.getLogger(__name__)


class HdlcSerialTransport(HdlcTransportBase):
    """Sessions on the same device path wait for each other (see serial_line).

    With `mode_e`, each open starts at 300 baud 7E1 with `/?!`, then switches to the rate the
    meter proposes, 8N1; `baudrate`/`bytesize`/`parity`/`stopbits` then do not apply."""

    def __init__(
        self,
        port_path: str,
        baudrate: int = 9600,
        *,
        bytesize: int = 8,
        parity: str = "N",
        stopbits: float = 1,
        client_sap: int = 16,
        server_logical: int = 1,
        server_physical: int | None = None,
        mode_e: bool = False,
        device_address: str = "",
        mode_e_switch_delay: float = 0.2,
        lock_timeout: float | None = None,
        timeout: float = 10.0,
        **hdlc_options: Any,
    ) -> None:
        super().__init__(
            client_sap=client_sap,
            server_logical=server_logical,
            server_physical=server_physical,
            timeout=timeout,
            **hdlc_options,
        )
        self.port_path = port_path
        self.settings = SerialSettings(baudrate, bytesize, parity, stopbits)
        self.mode_e = mode_e
        self.device_address = device_address
        self.mode_e_switch_delay = mode_e_switch_delay
        self.lock_timeout = lock_timeout
        self.identification: Identification | None = None
        self._line: SerialLine | None = None

    def __repr__(self) -> str:
        return f"HdlcSerialTransport({self.port_path}, {self._describe()})"

    def _describe(self) -> str:
        return f"HDLC server {self.server_address} on {self.port_path}"

    async def _open_stream(self) -> ByteStream:
        line = get_serial_line(self.port_path)
        first = SerialSettings(INITIAL_BAUDRATE) if self.mode_e else self.settings
        stream = await line.acquire(first, self.lock_timeout)
        self._line = line
        try:
            if self.mode_e:
                await self._mode_e(line, stream)
            stream.discard()
        except BaseException:
            self._line = None
            await line.release()
            raise
        return stream

    async def _release_stream(self, stream: ByteStream) -> None:
        line, self._line = self._line, None
        if line is not None:
            await line.release()

    async def _mode_e(self, line: SerialLine, stream: ByteStream) -> None:
        native = line.configure_7e1(INITIAL_BAUDRATE)
        encode = (lambda data: data) if native else with_even_parity
        stream.discard()
        handshake = ModeEHandshake(self.device_address)
        stream.write(encode(handshake.request()))
        identification: Identification | None = None
        try:
            async with asyncio.timeout(self.timeout):
                while identification is None:
                    identification = handshake.receive_data(await stream.read())
        except TimeoutError:
            raise LinkTimeout(f"no IEC 62056-21 identification on {self.port_path}") from None
        except DecodeError as exc:
            raise LinkProtocolError(f"mode E on {self.port_path}: {exc}") from exc
        log.debug("mode E identification on %s: %s", self.port_path, identification)
        self.identification = identification
        ack = handshake.acknowledgement()
        stream.write(encode(ack))
        # The acknowledgement must leave at 300 baud before the port changes speed.
        await asyncio.sleep(len(ack) * 10 / INITIAL_BAUDRATE + self.mode_e_switch_delay)
        stream.discard()  # echo of the acknowledgement, if the probe echoes
        line.configure(SerialSettings(identification.baudrate, 8, "N", 1))
