"""The watcher: everything the head-end publishes (and the billing feed sends), shown live with
rich, or as plain lines when the demo runs for a fixed time or without a terminal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import aiomqtt
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

ENERGY = "1.0.1.8.0.255"
RELAY_OBIS = "0.0.96.3.10.255"


@dataclass
class MeterView:
    meter_id: str
    balance: str = "-"
    relay: str = "?"
    output: bool | None = None
    command: str = "-"
    energy: str = "-"
    notes: str = ""
    seq: int = -1  # newest balance seq shown (an out-of-order event does not count)


class DemoView:
    """Everything the watcher saw, rendered live or as plain lines."""

    def __init__(self, meter_ids: list[str], prefix: str, console: Console, plain: bool) -> None:
        self.meters = {m: MeterView(m) for m in meter_ids}
        self.order = meter_ids
        self.prefix = prefix
        self.console = console
        self.plain = plain
        self.events: deque[str] = deque(maxlen=16)
        self.counts: dict[str, int] = {}
        self.started = time.monotonic()
        self.status = "-"

    def log(self, text: str) -> None:
        line = f"[{time.monotonic() - self.started:6.1f}s] {text}"
        self.events.append(line)
        if self.plain:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def count(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def on_message(self, topic: str, payload: bytes) -> None:
        try:
            text = payload.decode("utf-8", "replace")
            data: Any = json.loads(text) if text.startswith("{") else text
        except ValueError:
            data = payload.decode("utf-8", "replace")
        parts = topic.split("/")
        if topic == f"{self.prefix}/status":
            self.status = str(data)
            self.log(f"head-end {data}")
            return
        if topic == f"{self.prefix}/alarms" and isinstance(data, dict):
            self.count(f"alarm:{data.get('type')}")
            self.log(f"ALARM {data.get('type')} {data.get('meter_id') or ''} {data.get('detail')}")
            return
        if len(parts) != 4 or parts[1] != "meters" or not isinstance(data, dict):
            return
        meter_id, leaf = parts[2], parts[3]
        view = self.meters.setdefault(meter_id, MeterView(meter_id))
        if leaf == "readings":
            values = data.get("values", {})
            energy = values.get(ENERGY, {})
            if energy:
                view.energy = f"{energy.get('value')} {energy.get('unit') or ''}".strip()
            relay = values.get(RELAY_OBIS, {})
            if "value" in relay:
                view.output = bool(relay["value"])
                if view.output and view.relay == "ready_for_reconnection":
                    view.relay = "connected"  # the customer pressed the button
                    self.log(f"{meter_id} poll: supply restored at the meter")
            self.count("readings")
        elif leaf == "relay":
            view.relay = str(data.get("state"))
            view.output = data.get("output_state")
            self.count("relay")
            self.log(f"{meter_id} relay read back: {view.relay}")
        elif leaf == "commands":
            view.command = f"{data.get('action')} {data.get('status')}"
            self.count(f"command:{data.get('status')}")
            error = f" ({data['error']})" if data.get("error") else ""
            detail = f" - {data['detail']}" if data.get("detail") else ""
            self.log(
                f"{meter_id} command {data.get('action')} {data.get('status')} "
                f"attempt {data.get('attempt')}{error}{detail}"
            )
        elif leaf == "notifications":
            view.notes = str(data.get("type"))
            self.count(f"notification:{data.get('type')}")
            self.log(f"{meter_id} notification: {data.get('type')}{_policy_detail(data)}")

    def render(self) -> Group:
        table = Table(title=f"head-end demo - status: {self.status}", expand=True)
        for column in (
            "meter",
            "balance",
            "relay",
            "output",
            "last command",
            "energy import",
            "last notification",
        ):
            table.add_column(column)
        for meter_id in self.order:
            v = self.meters[meter_id]
            colour = {"connected": "green", "disconnected": "red"}.get(v.relay, "yellow")
            table.add_row(
                meter_id,
                v.balance,
                f"[{colour}]{v.relay}[/{colour}]",
                "-" if v.output is None else ("on" if v.output else "off"),
                v.command,
                v.energy,
                v.notes,
            )
        events = Panel("\n".join(self.events) or "(waiting)", title="events")
        return Group(table, events)


def _policy_detail(data: dict[str, object]) -> str:
    """What a prepaid policy's notice adds, in a few words for the feed."""
    if data.get("estimated_days_left") is not None:
        return (
            f" (about {data['estimated_days_left']} days left at this meter's own use; "
            f"suggested top-up {data.get('suggested_topup')})"
        )
    if data.get("scheduled_at"):
        return f" (quiet hours: held until {data['scheduled_at']})"
    if data.get("energy_kwh") is not None:
        return f" ({data['energy_kwh']} kWh from {data.get('period_start')})"
    return ""


async def watch(host: str, port: int, view: DemoView, ready: asyncio.Event) -> None:
    with contextlib.suppress(aiomqtt.MqttError):  # the broker goes away with the head-end
        await _watch_broker(host, port, view, ready)


async def _watch_broker(host: str, port: int, view: DemoView, ready: asyncio.Event) -> None:
    async with aiomqtt.Client(host, port, identifier=f"demo-watch-{os.getpid()}", timeout=10) as c:
        await c.subscribe(f"{view.prefix}/#", qos=1)
        await c.subscribe("billing/balance/+", qos=1)
        ready.set()
        async for message in c.messages:
            topic = message.topic.value
            payload = message.payload if isinstance(message.payload, bytes) else b""
            if topic.startswith("billing/balance/"):
                meter_id = topic.rsplit("/", 1)[1]
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    event = json.loads(payload)
                    shown = view.meters[meter_id]
                    if int(event["seq"]) > shown.seq:
                        shown.balance, shown.seq = str(event["balance"]), int(event["seq"])
                continue
            view.on_message(topic, payload)


async def show(
    view: DemoView, console: Console, plain: bool, duration: float | None, stop: asyncio.Event
) -> None:
    deadline = None if duration is None else time.monotonic() + duration

    async def tick() -> bool:
        """Wait a quarter second; False once it is time to stop (Ctrl-C or the duration)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.25):
                await stop.wait()
        return not stop.is_set() and (deadline is None or time.monotonic() < deadline)

    if plain:
        while await tick():
            pass
        return
    with Live(view.render(), console=console, refresh_per_second=4, screen=False) as live:
        while await tick():
            live.update(view.render())
