"""When each meter is due for collection: one heap of next-due times for the whole fleet.

A meter's slot within the interval comes from a hash of its id, so a fleet's polls spread
evenly over the interval (no thundering herd) and stay put across restarts. One heap entry per
meter, not one task per meter, keeps 100,000 meters cheap; the daemon's collection loop pops
what is due and runs it under a global concurrency bound."""

from __future__ import annotations

import heapq
import random
import zlib
from dataclasses import dataclass, field

from headend.meters.backoff import backoff_delay


def slot_offset(meter_id: str, interval_s: float) -> float:
    """The meter's fixed offset within the interval, in [0, interval)."""
    return (zlib.crc32(meter_id.encode()) / 2**32) * interval_s


def next_slot(meter_id: str, interval_s: float, after: float) -> float:
    """The first time strictly after `after` that falls on the meter's slot."""
    offset = slot_offset(meter_id, interval_s)
    cycles = (after - offset) // interval_s + 1
    return offset + cycles * interval_s


@dataclass(slots=True)
class MeterSchedule:
    """Per-meter state the scheduler keeps between polls."""

    meter_id: str
    due: float
    failures: int = 0
    generation: int = 0  # bumps on every reschedule; stale heap entries are skipped
    running: bool = False
    next_billing: float = 0.0
    next_load_profile: float = 0.0
    next_clock_check: float = 0.0
    unreachable_alarmed: bool = False


@dataclass(frozen=True, slots=True)
class PollJob:
    """What one session with a meter should do."""

    meter_id: str
    registers: bool = True
    load_profile: bool = False
    billing_profile: bool = False
    clock_check: bool = False


@dataclass
class Scheduler:
    interval_s: float
    load_profile_interval_s: float = 3600.0
    billing_interval_s: float = 86400.0
    clock_check_interval_s: float = 86400.0
    retry_base_s: float = 30.0
    unreachable_after: int = 3
    max_backoff_s: float | None = None  # longest wait between failed polls (None: interval)
    rng: random.Random = field(default_factory=random.Random)
    _heap: list[tuple[float, int, str]] = field(default_factory=list, init=False)
    _meters: dict[str, MeterSchedule] = field(default_factory=dict, init=False)

    # -- membership ------------------------------------------------------------------------
    def add(self, meter_id: str, now: float) -> None:
        """Schedule a meter at its slot in the current interval (at most one interval away).

        Profiles and clock are due on the first poll, so a restarted daemon catches up."""
        if meter_id in self._meters:
            return
        first = next_slot(meter_id, self.interval_s, now)
        entry = MeterSchedule(meter_id, first)
        self._meters[meter_id] = entry
        heapq.heappush(self._heap, (first, entry.generation, meter_id))

    def remove(self, meter_id: str) -> None:
        self._meters.pop(meter_id, None)  # its heap entry is dropped lazily

    def __contains__(self, meter_id: object) -> bool:
        return meter_id in self._meters

    def __len__(self) -> int:
        return len(self._meters)

    def meter_ids(self) -> list[str]:
        return list(self._meters)

    def get(self, meter_id: str) -> MeterSchedule | None:
        return self._meters.get(meter_id)

    # -- due work --------------------------------------------------------------------------
    def next_due(self) -> float | None:
        """Earliest due time of a live entry, or None when nothing is scheduled."""
        while self._heap:
            due, generation, meter_id = self._heap[0]
            entry = self._meters.get(meter_id)
            if entry is None or entry.generation != generation or entry.running:
                heapq.heappop(self._heap)
                continue
            return due
        return None

    def pop_due(self, now: float, limit: int) -> list[PollJob]:
        """Up to `limit` jobs whose time has come; they stay out of the heap until finished."""
        jobs: list[PollJob] = []
        while len(jobs) < limit:
            due = self.next_due()
            if due is None or due > now:
                break
            _, _, meter_id = heapq.heappop(self._heap)
            entry = self._meters[meter_id]
            entry.running = True
            jobs.append(
                PollJob(
                    meter_id,
                    registers=True,
                    load_profile=now >= entry.next_load_profile,
                    billing_profile=now >= entry.next_billing,
                    clock_check=now >= entry.next_clock_check,
                )
            )
        return jobs

    def take(self, meter_id: str, now: float, *, even_if_not_due: bool = False) -> PollJob | None:
        """The meter's job now, if it is due (or `even_if_not_due`) and not running: for a
        meter that can be polled only while it is connected (an inbound meter)."""
        entry = self._meters.get(meter_id)
        if entry is None or entry.running or (entry.due > now and not even_if_not_due):
            return None
        entry.running = True  # its heap entry is skipped until finished() pushes a new one
        return PollJob(
            meter_id,
            registers=True,
            load_profile=now >= entry.next_load_profile,
            billing_profile=now >= entry.next_billing,
            clock_check=now >= entry.next_clock_check,
        )

    def finished(self, job: PollJob, now: float, ok: bool) -> bool:
        """Reschedule after a poll. Returns True when the meter just became unreachable
        (``unreachable_after`` failures in a row), so the caller raises one alarm per outage."""
        entry = self._meters.get(job.meter_id)
        if entry is None:
            return False
        entry.running = False
        entry.generation += 1
        newly_unreachable = False
        if ok:
            entry.failures = 0
            entry.unreachable_alarmed = False
            if job.load_profile:
                entry.next_load_profile = now + self.load_profile_interval_s
            if job.billing_profile:
                entry.next_billing = now + self.billing_interval_s
            if job.clock_check:
                entry.next_clock_check = now + self.clock_check_interval_s
            entry.due = next_slot(job.meter_id, self.interval_s, now)
        else:
            entry.failures += 1
            if entry.failures >= self.unreachable_after and not entry.unreachable_alarmed:
                entry.unreachable_alarmed = True
                newly_unreachable = True
            cap = self.max_backoff_s if self.max_backoff_s is not None else self.interval_s
            entry.due = now + backoff_delay(entry.failures, self.retry_base_s, cap, self.rng)
        heapq.heappush(self._heap, (entry.due, entry.generation, job.meter_id))
        return newly_unreachable
