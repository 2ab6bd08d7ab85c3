"""A seeded, closed-form load curve: cumulative energy at any instant in O(1).

Ten thousand meters must answer reads and 35-day profiles without timers or stored history, so
the cumulative energy is a formula of time rather than a running sum. With b the local
quarter-hour index (local time / 900 s):

    E(b) = base * b + D(b) + N(b) + const,   D(b) = A sin(2 pi b / 96 + phi),   N(b) noise

The interval energy E(b+1) - E(b) is then base plus a daily wave plus bounded noise, always
positive (A and the noise are bounded so it stays above 0.1 * base). The noise is zero at 07:00
and 23:00 so the day-tariff register telescopes over whole days into a closed form too; the
night register is the total minus the day register. Between quarter-hour boundaries the energy
grows linearly (constant power within an interval)."""

from __future__ import annotations

import hashlib
import math

_MASK = (1 << 64) - 1
SLOTS_PER_DAY = 96
INTERVAL_S = 900
DAY_START_SLOT = 28  # 07:00: the day tariff (T1) runs from 07:00 to 23:00 local time
DAY_END_SLOT = 92  # 23:00
SOLAR_START_SLOT = 40  # 10:00: meters with PV export from 10:00 to 16:00
SOLAR_SLOTS = 24
REFERENCE_DAY = 19723  # 2024-01-01 in days since the Unix epoch


def mix64(x: int) -> int:
    """splitmix64 finaliser: a fast, well-spread 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def unit_float(x: int) -> float:
    """A hash as a float in [0, 1)."""
    return (x >> 11) * (1.0 / (1 << 53))


class LoadCurve:
    """One meter's consumption; every value is a pure function of (seed, index, time)."""

    __slots__ = (
        "_amp",
        "_base",
        "_c_day",
        "_d_install",
        "_export",
        "_key",
        "_phase",
        "_start_export",
        "_start_t1",
        "_start_total",
        "shares",
    )

    def __init__(self, seed: int, index: int) -> None:
        digest = hashlib.blake2b(f"load/{seed}/{index}".encode(), digest_size=32).digest()
        self._key = int.from_bytes(digest[:8], "big")
        u = [b / 255.0 for b in digest[8:]]
        average_w = 160.0 + 740.0 * u[0]
        self._base = average_w * INTERVAL_S / 3600.0  # Wh per quarter-hour
        self._amp = 0.6 * self._base * SLOTS_PER_DAY / (2 * math.pi)
        # Peak around 19:00 local, +/- one hour per meter.
        peak_slot = 76 + (u[1] - 0.5) * 8
        self._phase = -2 * math.pi * peak_slot / SLOTS_PER_DAY
        self._d_install = REFERENCE_DAY - 200 - int(1300 * u[2])
        self._start_total = 500_000.0 * u[3]
        self._start_t1 = 0.6 * self._start_total
        self._export = 0.5 * self._base if digest[12] % 5 == 0 else 0.0
        self._start_export = 20_000.0 * u[5] if self._export else 0.0
        raw_shares = (0.5 + u[6], 0.5 + u[7], 0.5 + u[8])
        total = sum(raw_shares)
        self.shares = tuple(s / total for s in raw_shares)
        self._c_day = (
            self._base * (DAY_END_SLOT - DAY_START_SLOT)
            + self._wave(DAY_END_SLOT)
            - self._wave(DAY_START_SLOT)
        )

    # -- building blocks ---------------------------------------------------------------------
    def _wave(self, b: int) -> float:
        return self._amp * math.sin(2 * math.pi * b / SLOTS_PER_DAY + self._phase)

    def _noise(self, b: int) -> float:
        slot = b % SLOTS_PER_DAY
        if slot == DAY_START_SLOT or slot == DAY_END_SLOT:
            return 0.0
        return 0.3 * self._base * unit_float(mix64(self._key ^ (b & _MASK)))

    def _total_at(self, b: int) -> float:
        b0 = self._d_install * SLOTS_PER_DAY
        return (
            self._start_total
            + self._base * (b - b0)
            + self._wave(b)
            - self._wave(b0)
            + self._noise(b)
            - self._noise(b0)
        )

    def _t1_at(self, b: int) -> float:
        day, slot = divmod(b, SLOTS_PER_DAY)
        value = self._start_t1 + (day - self._d_install) * self._c_day
        if slot >= DAY_END_SLOT:
            value += self._c_day
        elif slot > DAY_START_SLOT:
            value += self._total_at(b) - self._total_at(day * SLOTS_PER_DAY + DAY_START_SLOT)
        return value

    def _export_at(self, b: int) -> float:
        if not self._export:
            return 0.0
        day, slot = divmod(b, SLOTS_PER_DAY)
        solar = (day - self._d_install) * SOLAR_SLOTS + min(
            max(slot - SOLAR_START_SLOT, 0), SOLAR_SLOTS
        )
        return self._start_export + self._export * solar

    def at_boundary(self, b: int) -> tuple[float, float, float]:
        """(import total, import day tariff T1, export) in Wh at quarter-hour boundary b."""
        return self._total_at(b), self._t1_at(b), self._export_at(b)

    # -- public views ------------------------------------------------------------------------
    def energy(self, local_s: float) -> tuple[float, float, float]:
        """(import total, import T1, export) in Wh at local time `local_s` (seconds)."""
        position = local_s / INTERVAL_S
        b = math.floor(position)
        fraction = position - b
        low = self.at_boundary(b)
        if fraction == 0.0:
            return low
        high = self.at_boundary(b + 1)
        return (
            low[0] + fraction * (high[0] - low[0]),
            low[1] + fraction * (high[1] - low[1]),
            low[2] + fraction * (high[2] - low[2]),
        )

    def power(self, local_s: float) -> tuple[float, float]:
        """(import W, export W) during the quarter-hour holding local time `local_s`."""
        b = math.floor(local_s / INTERVAL_S)
        low = self.at_boundary(b)
        high = self.at_boundary(b + 1)
        factor = 3600.0 / INTERVAL_S
        return (high[0] - low[0]) * factor, (high[2] - low[2]) * factor

    def voltage(self, local_s: float, phase: int) -> float:
        """Phase voltage in V: 230 V with a little per-minute wander."""
        minute = int(local_s // 60)
        u = unit_float(mix64(self._key ^ ((minute * 4 + phase) & _MASK) ^ 0x5151))
        return 230.0 + 6.0 * (u - 0.5)
