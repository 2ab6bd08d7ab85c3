"""How long to leave a meter alone after a failure. Polls and relay commands both back off
from a meter that does not answer, with the same curve, so neither hammers a dead modem."""

from __future__ import annotations

import random


def backoff_delay(
    attempt: int,
    base_s: float,
    cap_s: float,
    rng: random.Random | None = None,
) -> float:
    """Exponential backoff with jitter: attempt 1 waits about base, doubling up to cap.

    The jitter (50..100 % of the step) keeps a fleet that failed together from retrying
    together."""
    attempt = max(1, attempt)
    step = min(cap_s, base_s * (2 ** min(attempt - 1, 32)))
    rand = (rng or random).random()
    return step * (0.5 + 0.5 * rand)
