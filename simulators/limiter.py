"""A meter's load limiter (COSEM Limiter, class 71) as it acts on the simulated load: while a
threshold below the load is active the meter lets through at most the threshold, so the
instantaneous power is capped and the energy registers advance only by what was let through.

Kept as windows of (start, end, threshold) beside the relay's open windows, so the closed-form
load curve stays the source of truth: what a window held back is the curve's energy above the
threshold over the window, integrated numerically (a few hundred steps a window at most)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["NO_LIMIT_W", "LimiterState"]

NO_LIMIT_W = 100_000  # threshold_normal out of the box: far above any household's load
_MAX_STEPS = 400
_MIN_STEP_S = 60.0


@dataclass
class LimiterState:
    threshold_normal: int = NO_LIMIT_W
    threshold_emergency: int = NO_LIMIT_W
    min_over_threshold_duration: int = 0
    min_under_threshold_duration: int = 0
    windows: list[list[float | None]] = field(default_factory=list)  # [start, end, watts]

    def set_threshold(self, watts: int, at: float) -> None:
        """A new threshold_normal from `at` on (an open window closes there)."""
        if self.windows and self.windows[-1][1] is None:
            self.windows[-1][1] = at
        self.threshold_normal = watts
        if watts < NO_LIMIT_W:
            self.windows.append([at, None, float(watts)])

    def cap(self, t: float) -> float | None:
        """The threshold in force at `t` (None: no limit)."""
        for start, end, watts in reversed(self.windows):
            assert start is not None and watts is not None
            if start <= t and (end is None or t < end):
                return watts
        return None

    def held_back_wh(self, power_w: Callable[[float], float], t: float) -> float:
        """Energy (Wh) the limiter kept from the load up to `t`."""
        held = 0.0
        for start, end, watts in self.windows:
            assert start is not None and watts is not None
            if start >= t:
                break
            stop = t if end is None or end > t else end
            span = stop - start
            if span <= 0:
                continue
            step = max(_MIN_STEP_S, span / _MAX_STEPS)
            at = start
            while at < stop:
                width = min(step, stop - at)
                excess = power_w(at + width / 2) - watts
                if excess > 0:
                    held += excess * width / 3600.0
                at += width
        return held
