"""Transport-level fault decisions, shared by the TCP servers and the serial lines.

The meter's Faults object is read at every decision, so a change through the control interface
takes effect on the next request, also on connections already open. Randomness comes from a
per-connection generator seeded from (fleet seed, meter index, connection number): a run with
the same seed and the same traffic makes the same decisions."""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable

from simulators.config import Faults


class Verdict(enum.Enum):
    SEND = "send"  # send the frame as it is
    DROP = "drop"  # swallow it: the client times out (HDLC may recover by retransmission)
    CORRUPT = "corrupt"  # send it damaged (bad FCS / bad wrapper header)


class FleetClock:
    """Seconds since the fleet started: the time base of offline windows."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self.started = now()

    def uptime(self) -> float:
        return self._now() - self.started


def is_offline(faults: Faults, uptime: float) -> bool:
    if faults.offline:
        return True
    return any(start <= uptime < end for start, end in faults.offline_windows)


class FaultDice:
    """The random side of the faults, for one connection."""

    __slots__ = ("_rng",)

    def __init__(self, seed: int, index: int, connection: int) -> None:
        self._rng = random.Random(f"{seed}/{index}/{connection}")

    def delay(self, faults: Faults) -> float:
        """Seconds to hold an answer: the fixed latency plus up to `jitter_ms` more."""
        millis = faults.latency_ms
        if faults.jitter_ms > 0:
            millis += self._rng.uniform(0.0, faults.jitter_ms)
        return max(millis, 0.0) / 1000.0

    def close_now(self, faults: Faults, *, mid_session: bool) -> bool:
        """Whether to close the connection instead of answering this request.

        Only counts once the connection has answered something, so the fault shows up as a
        session cut short rather than a meter that never answers."""
        return mid_session and self._hit(faults.close_mid_session_rate)

    def frame_fate(self, faults: Faults) -> Verdict:
        """What happens to one outgoing frame (an HDLC I frame or a wrapper PDU)."""
        if self._hit(faults.drop_rate):
            return Verdict.DROP
        if self._hit(faults.corrupt_rate):
            return Verdict.CORRUPT
        return Verdict.SEND

    def _hit(self, rate: float) -> bool:
        if rate <= 0.0:
            return False
        return rate >= 1.0 or self._rng.random() < rate


def corrupt_hdlc_frame(frame: bytes) -> bytes:
    """The frame with its FCS inverted: every receiver must reject it."""
    if len(frame) < 4:
        return frame
    damaged = bytearray(frame)
    damaged[-3] ^= 0xFF
    damaged[-2] ^= 0xFF
    return bytes(damaged)


def corrupt_wrapper(pdu: bytes) -> bytes:
    """The wrapper PDU with a version field that is not 1 (TCP itself never corrupts bytes,
    so a damaged answer over the wrapper is a broken header from a faulty meter stack)."""
    if len(pdu) < 2:
        return pdu
    return b"\xde\xad" + pdu[2:]
