"""Protected supply (life-support equipment, hospitals; 保电): what marking a meter protected,
or lifting it, means for its relay. Pure, like relay/decision.py, which holds the rule for
balance events on a protected meter.

Protecting a meter in arrears brings it back on (a protected supply must be on) and gives up
a pending disconnect for arrears; an operator's own disconnect stands (line work is not
arrears). Lifting protection takes the meter where its newest balance says, through the same
grace and quiet hours as any disconnect for arrears."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from headend.domain import CONNECTED, DISCONNECT, DISCONNECTED, PROTECTED_IN_ARREARS
from headend.relay import rules
from headend.relay.decision import ActiveCommand, Step, converge

__all__ = ["ProtectionStep", "protect", "unprotect"]


@dataclass(frozen=True, slots=True)
class ProtectionStep:
    step: Step
    desired_state: str | None  # the meter's desired state afterwards (None: unchanged)
    alarm: str | None = None
    scheduled_at: datetime | None = None


def protect(
    last_balance: Decimal | None,
    desired: str | None,
    confirmed: str | None,
    active: ActiveCommand | None,
    active_source: str | None,
    reason: str,
) -> ProtectionStep:
    in_arrears = last_balance is not None and last_balance < 0
    if active is not None and active.action == DISCONNECT and active_source == "operator":
        return ProtectionStep(Step("protected; the operator's own disconnect stands"), None)
    if not in_arrears and desired != DISCONNECTED:
        return ProtectionStep(Step("protected"), None)
    step = converge(
        CONNECTED,
        confirmed,
        active,
        reason=f"protected supply ({reason})",
        supersede_reason="superseded: protected supply is not disconnected for arrears",
    )
    return ProtectionStep(
        replace(step, detail=f"protected: {step.detail}"),
        CONNECTED,
        alarm=PROTECTED_IN_ARREARS if in_arrears else None,
    )


def unprotect(
    last_balance: Decimal | None,
    confirmed: str | None,
    active: ActiveCommand | None,
    reason: str,
    disconnect_at: datetime | None,
) -> ProtectionStep:
    if last_balance is None or last_balance >= 0:
        return ProtectionStep(Step("protection lifted"), None)
    step = converge(
        DISCONNECTED,
        confirmed,
        active,
        reason=f"protection lifted ({reason}), balance {last_balance}",
        supersede_reason="superseded: protection lifted",
    )
    scheduled_at = None
    if step.command is not None and disconnect_at is not None and confirmed != DISCONNECTED:
        step = replace(
            step,
            command=replace(
                step.command,
                not_before=disconnect_at,
                episode_started_at=step.command.episode_started_at or disconnect_at,
            ),
        )
        scheduled_at = disconnect_at
    return ProtectionStep(
        replace(step, detail=f"protection lifted: {step.detail}"),
        rules.desired_state(last_balance),
        scheduled_at=scheduled_at,
    )
