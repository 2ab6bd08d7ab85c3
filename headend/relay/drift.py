"""Drift: a poll's relay read-back judged against the state the meter should be in (README,
"Prepaid relay rules"), as one pure function that storage applies in the transaction that
records the read-back.

A relay can change behind the head-end's back (a direct `headend relay --host`, a meter reset,
tampering, the customer's own switch). On while it should be off is the dangerous case: an
alarm, and the meter is disconnected again (a held meter only raises the alarm: the operator
holds it). Off while it should be on raises the alarm only, never a forced reconnect: the
customer may have switched off on purpose. While a command is pending the head-end is still
getting the meter there, so nothing is judged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from headend.domain import DISCONNECT, DISCONNECTED
from headend.relay import rules
from headend.relay.decision import NewCommand

__all__ = ["IN_STEP", "MISMATCH", "NOT_JUDGED", "Drift", "judge"]

NOT_JUDGED: Final = "not_judged"
"""Nothing to compare with (no desired state yet), or a command is still on its way."""
IN_STEP: Final = "in_step"
"""The relay is where it should be: a standing mismatch alarm is cleared."""
MISMATCH: Final = "mismatch"
"""The relay is not where it should be: relay_state_mismatch (and maybe a command)."""
Outcome = Literal["not_judged", "in_step", "mismatch"]


@dataclass(frozen=True, slots=True)
class Drift:
    outcome: Outcome
    detail: str = ""
    command: NewCommand | None = None  # disconnect it again


def judge(
    target: str | None,
    state: str,
    output_state: bool,
    *,
    held: bool = False,
    pending: bool = False,
) -> Drift:
    """What a poll reading the relay in `state` means for a meter that should be in `target`
    (relay/decision.py `target`: the held state, else the newest balance's); `pending`: the
    meter has an active command."""
    if target is None or pending:
        return Drift(NOT_JUDGED)
    if rules.state_satisfies(target, state, output_state):
        return Drift(IN_STEP)
    seen = (
        f"relay read back {state} (output_state={str(output_state).lower()}) "
        f"while it should be {target}"
    )
    if target == DISCONNECTED:
        if held:
            return Drift(MISMATCH, f"{seen}; held by an operator: not switched")
        return Drift(
            MISMATCH,
            f"{seen}; disconnecting it again",
            NewCommand(DISCONNECT, f"drift: {seen}"),
        )
    return Drift(MISMATCH, f"{seen}; not reconnected by the head-end (switched off on site?)")
