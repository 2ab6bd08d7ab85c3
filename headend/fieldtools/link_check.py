"""Does an HDLC station answer? One SNRM, its UA (or DM), then DISC: the smallest question a
tool can ask a meter, used by `scan` (every address on a bus) and `probe` (which address).

It works on a raw ByteStream rather than through HdlcClientConnection because it must learn
who answered: a 1-byte server address (logical device only) reaches a meter whatever its
physical address, and the UA's source address then says what that physical address is. The
frames come from drivers.hdlc (HdlcFrame.make, HdlcFrameReader); only the wait is here, and
every wait has a deadline."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from cosem_objects.errors import DecodeError
from drivers.errors import LinkClosed
from drivers.hdlc import FrameType, HdlcAddress, HdlcFrame, HdlcFrameReader, HdlcParameters
from drivers.transports.stream import ByteStream

DISC_WAIT_S = 0.5


@dataclass(frozen=True, slots=True)
class LinkAnswer:
    """Who answered an SNRM, and how."""

    server: HdlcAddress  # the answer's source address
    accepted: bool  # UA (True) or DM (False)
    params: HdlcParameters | None  # the limits the meter stated in its UA
    bad_frames: int = 0  # damaged frames seen while waiting (a collision on a bus?)
    answers: int = 1  # UA/DM frames seen (more than one: several stations took the address)


class _Answers:
    """UA/DM frames to `client` from `server`'s station, in arrival order; a read may bring
    several (every station on a bus that took the address), and none is lost."""

    def __init__(self, stream: ByteStream, client: HdlcAddress, server: HdlcAddress) -> None:
        self.stream = stream
        self.client = client
        self.server = server
        self.reader = HdlcFrameReader()
        self.pending: deque[HdlcFrame] = deque()

    async def next(self, wait_s: float) -> HdlcFrame | None:
        """The next answer, or None when none came within `wait_s`."""
        try:
            async with asyncio.timeout(wait_s):
                while not self.pending:
                    for frame in self.reader.feed(await self.stream.read()):
                        if (
                            frame.frame_type in (FrameType.UA, FrameType.DM)
                            and frame.dst.same_station(self.client)
                            and frame.src.same_station(self.server)
                        ):
                            self.pending.append(frame)
        except (TimeoutError, LinkClosed):
            return None
        return self.pending.popleft()


async def check_link(
    stream: ByteStream,
    client: HdlcAddress,
    server: HdlcAddress,
    wait_s: float,
    proposal: HdlcParameters | None = None,
    linger_s: float = 0.0,
) -> LinkAnswer | None:
    """SNRM to `server`; on UA, DISC again at once. None when nobody answered in `wait_s`.

    With `linger_s`, further answers are counted for that long: an address that several
    stations on a bus accept (a 1-byte address reaches them all) gets several UAs."""
    answers = _Answers(stream, client, server)
    stream.discard()
    info = b"" if proposal is None or proposal.is_default else proposal.to_bytes()
    stream.write(HdlcFrame.make(FrameType.SNRM, server, client, info=info).to_bytes())
    frame = await answers.next(wait_s)
    if frame is None:
        return None
    count = 1
    while linger_s > 0 and await answers.next(linger_s) is not None:
        count += 1
    params: HdlcParameters | None = None
    if frame.frame_type is FrameType.UA:
        try:
            params = HdlcParameters.from_bytes(frame.info)
        except (DecodeError, ValueError):
            params = None
        # Leave the meter as we found it: disconnected.
        stream.write(HdlcFrame.make(FrameType.DISC, frame.src, client).to_bytes())
        await _Answers(stream, client, frame.src).next(min(wait_s, DISC_WAIT_S))
    return LinkAnswer(
        frame.src, frame.frame_type is FrameType.UA, params, answers.reader.bad_frames, count
    )
