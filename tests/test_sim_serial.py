"""Meters on pseudo-terminals: multi-drop addressing, mode E opening, baud-rate pacing.

Clients are real: raw bytes on the pty (with the project's sans-IO HDLC client for framing) and
the head-end session over drivers' HDLC serial transport."""

from __future__ import annotations

import asyncio
import os
import tty
from pathlib import Path

import pytest

from drivers.connect import open_session
from drivers.hdlc import (
    Connected,
    HdlcAddress,
    HdlcClientConnection,
    HdlcFrameReader,
    ModeRejected,
)
from drivers.iec21 import parse_identification
from simulators.fleet import run_fleet

SERIAL_NUMBER = "0.0.96.1.0.255"


class PtyPeer:
    """The client end of a simulated line, opened like a serial port."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        self._data = bytearray()
        self._event = asyncio.Event()
        asyncio.get_running_loop().add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        try:
            self._data += os.read(self.fd, 4096)
        except BlockingIOError:
            return
        self._event.set()

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    async def read_until(self, done, wait_s: float) -> bytes:  # type: ignore[no-untyped-def]
        """Bytes received until `done(bytes)` holds; whatever came within `wait_s`."""
        try:
            async with asyncio.timeout(wait_s):
                while not done(bytes(self._data)):
                    self._event.clear()
                    await self._event.wait()
        except TimeoutError:
            pass
        data = bytes(self._data)
        self._data.clear()
        return data

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.fd)
        os.close(self.fd)


def _client(physical: int) -> HdlcClientConnection:
    return HdlcClientConnection(HdlcAddress.client(16), HdlcAddress.server(1, physical))


async def test_several_meters_share_one_line(sim_connection) -> None:
    async with run_fleet(3, transport="serial", meters_per_line=3, seed=6) as fleet:
        assert len(fleet.serial_paths) == 1
        path = fleet.serial_paths[0]
        assert all(fleet.serial_path(i) == path for i in range(3))
        assert len({fleet.config(i).server_physical for i in range(3)}) == 3
        for index in (2, 0, 1):
            async with open_session(sim_connection(fleet, index), timeout=3) as session:
                readings = await session.read([SERIAL_NUMBER])
            assert readings[SERIAL_NUMBER].value == fleet.config(index).meter_id
        rows = fleet.rows()
        assert {row.serial_port for row in rows} == {path}
        assert {row.baud for row in rows} == {9600}


async def test_only_the_addressed_meter_answers() -> None:
    async with run_fleet(2, transport="serial", meters_per_line=2) as fleet:
        peer = PtyPeer(fleet.serial_paths[0])
        try:
            stranger = _client(fleet.config(1).server_physical + 50)
            peer.write(stranger.connect())
            assert await peer.read_until(bool, wait_s=0.3) == b""  # nobody home
            for index in (0, 1):
                client = _client(fleet.config(index).server_physical)
                peer.write(client.connect())
                raw = await peer.read_until(lambda d: d.endswith(b"\x7e") and len(d) > 8, 2)
                events = client.receive_data(raw)
                assert any(isinstance(event, Connected) for event in events), events
                frames = HdlcFrameReader().feed(raw)
                assert len(frames) == 1  # exactly one UA: the other meter stayed quiet
                assert frames[0].src.lower == fleet.config(index).server_physical
        finally:
            peer.close()


async def test_frames_before_snrm_get_dm() -> None:
    async with run_fleet(1, transport="serial") as fleet:
        peer = PtyPeer(fleet.serial_paths[0])
        try:
            client = _client(fleet.config(0).server_physical)
            client.connect()
            # Pretend the link is up and poll: the meter has no link, so it answers DM.
            from drivers.hdlc import FrameType, HdlcFrame

            poll = HdlcFrame.make(FrameType.RR, client.peer, client.local).to_bytes()
            peer.write(poll)
            raw = await peer.read_until(lambda d: len(d) > 8 and d.endswith(b"\x7e"), 2)
            events = client.receive_data(raw)
            assert any(isinstance(event, ModeRejected) for event in events), events
        finally:
            peer.close()


async def test_mode_e_opening_identifies_the_meter() -> None:
    async with run_fleet(2, transport="serial", meters_per_line=2, seed=8) as fleet:
        peer = PtyPeer(fleet.serial_paths[0])
        try:
            peer.write(b"/?!\r\n")
            line = await peer.read_until(lambda d: d.endswith(b"\r\n"), 2)
            ident = parse_identification(line)
            assert ident.supports_hdlc and ident.baudrate == 9600
            assert ident.ident == fleet.config(0).meter_id
            second = fleet.config(1).meter_id
            peer.write(f"/?{second}!\r\n".encode())
            ident = parse_identification(await peer.read_until(lambda d: d.endswith(b"\r\n"), 2))
            assert ident.ident == second
            peer.write(b"/?NOBODY!\r\n")
            assert await peer.read_until(bool, wait_s=0.3) == b""
        finally:
            peer.close()


async def test_client_with_mode_e_reads_the_meter(sim_connection) -> None:
    async with run_fleet(1, transport="serial", seed=8) as fleet:
        connection = sim_connection(fleet, 0, mode_e=True)
        async with open_session(connection, timeout=3) as session:
            readings = await session.read([SERIAL_NUMBER])
        assert readings[SERIAL_NUMBER].value == fleet.config(0).meter_id


async def test_pacing_holds_answers_to_the_baud_rate() -> None:
    # A lower bound only: the pacing guarantees at least this much time on the "wire".
    baud = 1200
    async with run_fleet(1, transport="serial", baud=baud, pace=True) as fleet:
        peer = PtyPeer(fleet.serial_paths[0])
        try:
            client = _client(fleet.config(0).server_physical)
            snrm = client.connect()
            loop = asyncio.get_running_loop()
            began = loop.time()
            peer.write(snrm)
            raw = await peer.read_until(lambda d: len(d) > 8 and d.endswith(b"\x7e"), 5)
            elapsed = loop.time() - began
            assert any(isinstance(e, Connected) for e in client.receive_data(raw))
            on_wire = (len(snrm) + len(raw)) * 10 / baud
            assert elapsed >= on_wire * 0.9
        finally:
            peer.close()


async def test_paced_line_serves_a_whole_session(sim_connection) -> None:
    async with run_fleet(1, transport="serial", baud=19200, pace=True) as fleet:
        async with open_session(sim_connection(fleet, 0), timeout=5) as session:
            readings = await session.read([SERIAL_NUMBER])
        assert readings[SERIAL_NUMBER].value == fleet.config(0).meter_id
        assert fleet.lines[0].bytes_out > 0


@pytest.mark.parametrize("per_line", [1, 4])
async def test_lines_are_grouped_by_meters_per_line(per_line: int) -> None:
    async with run_fleet(4, transport="serial", meters_per_line=per_line) as fleet:
        assert len(fleet.serial_paths) == 4 // per_line
        assert all(_is_device(path) for path in fleet.serial_paths)
    assert fleet.serial_paths == []


def _is_device(path: str) -> bool:
    return Path(path).is_char_device()
