"""The scripted billing feed: which balance goes to which meter when, what each meter's relay
must be at the end, and the MQTT publisher that plays the script.

The script holds the cases a real feed throws at the head-end (low, below zero, exactly zero, a
duplicate, an out-of-order event, malformed payloads, an unknown meter, a customer pressing the
button), so one run of the demo shows each rule of the prepaid path."""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aiomqtt

from headend.demo.simulator import READY_MODE_METER, Simulator
from headend.demo.view import DemoView


@dataclass(frozen=True)
class Step:
    at: float  # seconds into the script
    meter: int  # meter index (-1: a meter the inventory does not know)
    balance: str | None  # None: send `raw` instead
    seq: int = 0
    raw: bytes | None = None
    note: str = ""
    button: bool = False  # the customer presses the meter's button instead
    copy: bool = False  # resend the meter's event of this seq exactly (a duplicate)
    late_s: float = 0.0  # the event is dated this long ago (delivered out of order)


@dataclass
class DemoScript:
    """The billing feed, and what each meter's relay must be at the end."""

    meters: int
    steps: list[Step] = field(default_factory=list)
    expected: dict[int, str] = field(default_factory=dict)

    @classmethod
    def build(cls, meters: int) -> DemoScript:
        s = cls(meters)
        for i in range(meters):
            s.steps.append(Step(1.0, i, "80.00", 1, note="opening balance"))
            s.expected[i] = "connected"
        s.steps += [
            Step(4.0, 0, "15.00", 2, note="low balance"),
            Step(4.0, 1, "12.00", 2, note="low balance"),
            Step(7.0, 0, "-5.00", 3, note="below zero: disconnect"),
            Step(7.0, READY_MODE_METER, "-1.50", 2, note="below zero: disconnect"),
            Step(7.5, 3, "0", 2, note="exactly zero: no change"),
            Step(9.0, 0, "-5.00", 3, copy=True, note="duplicate (same event): ignored"),
            Step(9.0, 1, "-10.00", 1, late_s=3600, note="out of order (old seq): ignored"),
            Step(10.0, 4, None, raw=b"this is not json", note="malformed: bad_event"),
            Step(10.0, -1, "5.00", 1, note="unknown meter: bad_event"),
            Step(14.0, 0, "25.00", 4, note="payment: reconnect"),
            Step(14.0, READY_MODE_METER, "30.00", 3, note="payment: ready for reconnection"),
            Step(19.0, READY_MODE_METER, None, button=True, note="customer presses the button"),
        ]
        if meters > 5:
            s.steps.append(Step(11.0, 5, "-3.00", 2, note="below zero: stays disconnected"))
            s.expected[5] = "disconnected"
        s.steps.sort(key=lambda step: step.at)
        return s

    @property
    def length_s(self) -> float:
        return max(step.at for step in self.steps)


async def play(
    script: DemoScript,
    meter_ids: list[str],
    simulator: Simulator,
    host: str,
    port: int,
    view: DemoView,
    scale: float,
) -> None:
    async with aiomqtt.Client(
        host, port, identifier=f"demo-billing-{os.getpid()}", timeout=10
    ) as c:
        began = time.monotonic()
        sent: dict[tuple[str, int], bytes] = {}
        for step in script.steps:
            delay = step.at * scale - (time.monotonic() - began)
            if delay > 0:
                await asyncio.sleep(delay)
            meter_id = meter_ids[step.meter] if step.meter >= 0 else "NOSUCHMETER"
            if step.button:
                await simulator.control_request({"op": "press_button", "meter": meter_id})
                view.log(f"{meter_id}: {step.note}")
                continue
            if step.raw is not None:
                payload = step.raw
            elif step.copy:
                payload = sent[meter_id, step.seq]
            else:
                # Events are (meter_id, event_id): a late one is another event of billing's.
                ts = datetime.now(UTC) - timedelta(seconds=step.late_s)
                payload = json.dumps(
                    {
                        "meter_id": meter_id,
                        "balance": step.balance,
                        "currency": "CNY",
                        "seq": step.seq,
                        "event_id": f"demo-{meter_id}-{step.seq}-{step.at:g}",
                        "ts": ts.isoformat().replace("+00:00", "Z"),
                    }
                ).encode()
                sent[meter_id, step.seq] = payload
            view.log(f"billing -> {meter_id}: balance {step.balance or '?'} ({step.note})")
            await c.publish(f"billing/balance/{meter_id}", payload, qos=1, timeout=10)
