"""A validated balance event: billing's word on one meter's prepaid balance.

The MQTT payload parser builds it, the relay decision judges it and storage records it. It
imports nothing of ours (like domain.py), so those three share one definition without any of
them importing another: it cannot live in mqtt/ (storage would depend on the transport) nor in
storage/ (the parser would load the database layer to build an event)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

__all__ = ["BalanceEvent"]


@dataclass(frozen=True, slots=True)
class BalanceEvent:
    meter_id: str
    balance: Decimal
    currency: str
    seq: int
    event_id: str
    ts: datetime
    """Aware, in UTC."""
    warning_threshold: Decimal | None = None
    """The event's own low-balance threshold; None: the configured one applies."""
    price: Decimal | None = None
    """The customer's price per kWh, for the run-out forecast; None: [prepaid] price_per_kwh."""
