"""The end of the demo: every meter's relay, read at the simulator itself (not from what the
head-end says), against where the billing script must have left it."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from headend.config import Config
from headend.demo.billing import DemoScript
from headend.demo.simulator import Simulator
from headend.demo.view import DemoView
from headend.status import status_report


async def verdict(
    script: DemoScript,
    meter_ids: list[str],
    simulator: Simulator,
    view: DemoView,
    console: Console,
    config: Config,
    *,
    judge: bool = True,
) -> bool:
    """The relays at the simulator against what the billing script should have led to. When
    the demo was stopped (Ctrl-C) before the script ended there is nothing to judge yet."""

    problems: list[str] = []
    table = Table("meter", "expected", "at the simulator", "control mode", title="demo summary")
    for index, meter_id in enumerate(meter_ids):
        try:
            relay = await simulator.control_request({"op": "relay", "meter": meter_id})
        except OSError as exc:
            console.print(f"demo: the simulator no longer answers ({exc}); no summary")
            return False
        state = relay["state"]
        expected = script.expected.get(index, "connected")
        table.add_row(meter_id, expected, state, str(relay["control_mode"]))
        if state != expected:
            problems.append(f"{meter_id}: relay {state}, expected {expected}")
    console.print(table)
    report = await status_report(config.database.url)
    alarms = [a["type"] for a in report["alarms"]]
    console.print(
        f"commands: {view.counts.get('command:confirmed', 0)} confirmed, "
        f"{report['active_commands']} still active; "
        f"notifications: "
        + ", ".join(
            f"{k.split(':', 1)[1]} {v}"
            for k, v in sorted(view.counts.items())
            if k.startswith("notification:")
        )
        + f"; alarms: {', '.join(sorted(alarms)) or 'none'}",
        highlight=False,
    )
    if alarms.count("bad_event") < 2:
        problems.append(f"expected 2 bad_event alarms, saw {alarms.count('bad_event')}")
    if view.counts.get("notification:low_balance", 0) < 2:
        problems.append("expected low_balance notifications")
    if not judge:
        console.print("demo: stopped before the billing script finished", highlight=False)
        return True
    if problems:
        console.print("demo: FAILED: " + "; ".join(problems), highlight=False)
        return False
    console.print("demo: OK", highlight=False)
    return True
