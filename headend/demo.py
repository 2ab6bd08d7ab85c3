"""`headend demo`: the whole system on one box, driven by a scripted billing feed.

A simulator fleet (`python -m simulators`, a subprocess: headend never imports simulators),
the embedded MQTT broker, SQLite in a work directory, the head-end daemon in this process, and
a billing feed that drives some balances low, below zero and back, with a duplicate, an
out-of-order event, a zero balance and malformed payloads thrown in. A watcher subscribes to
everything the head-end publishes and shows it live (rich), or as plain lines with
`--duration S`, ending with a check of every meter's relay at the simulator itself."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from headend.config import Config, LoggingConfig, load_config
from headend.daemon import Daemon, DaemonTuning, configure_daemon_logging
from headend.meters.inventory import import_inventory
from headend.mqtt.broker import free_port
from headend.status import status_report
from headend.storage import Database

__all__ = ["DemoScript", "run_demo"]

SIM_START_TIMEOUT_S = 60.0
ENERGY = "1.0.1.8.0.255"
RELAY_OBIS = "0.0.96.3.10.255"
READY_MODE_METER = 2  # this meter runs control mode 1: reconnection needs the button


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
            self.log(f"{meter_id} notification: {data.get('type')}")

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


# -- the simulator subprocess ------------------------------------------------------------------
@dataclass
class Simulator:
    process: asyncio.subprocess.Process
    control: tuple[str, int]
    inventory: Path

    async def control_request(self, request: dict[str, Any]) -> Any:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*self.control), 10)
        try:
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), 10)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        answer = json.loads(line)
        if not answer.get("ok"):
            raise RuntimeError(f"simulator control: {answer.get('error')}")
        return answer.get("result")

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


@contextlib.asynccontextmanager
async def start_simulator(workdir: Path, meters: int) -> AsyncIterator[Simulator]:
    fleet_file = workdir / "fleet.toml"
    inventory = workdir / "inventory.csv"
    fleet_file.write_text(
        "[fleet]\n"
        f"meters = {meters}\n"
        'host = "127.0.0.1"\n'
        "port = 0\n"
        'transport = "wrapper"\n'
        'security = "none"\n'
        "seed = 42\n"
        "control_mode = 2\n"
        f'inventory = "{inventory}"\n'
        "control_port = 0\n"
        "\n[[meter]]\n"
        f"index = {READY_MODE_METER}\n"
        "control_mode = 1\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulators",
        "--fleet",
        str(fleet_file),
        stdout=asyncio.subprocess.PIPE,
        stderr=(workdir / "simulator.log").open("ab"),
        # Its own session: Ctrl-C in the terminal interrupts the demo, which then stops the
        # simulator itself after the summary, instead of both dying at once.
        start_new_session=True,
    )
    control: tuple[str, int] | None = None
    try:
        assert process.stdout is not None
        async with asyncio.timeout(SIM_START_TIMEOUT_S):
            while True:
                raw = await process.stdout.readline()
                if not raw:
                    raise RuntimeError(
                        f"the simulator exited early (see {workdir / 'simulator.log'})"
                    )
                line = raw.decode().strip()
                if line.startswith("control:"):
                    host, _, port = line.split(":", 1)[1].strip().rpartition(":")
                    control = (host, int(port))
                if line.startswith("ready:"):
                    break
        assert control is not None, "the simulator did not open its control port"
        simulator = Simulator(process, control, inventory)
        yield simulator
    finally:
        sim = Simulator(process, control or ("127.0.0.1", 0), inventory)
        await sim.stop()


# -- the head-end ------------------------------------------------------------------------------
def demo_config(workdir: Path, broker_port: int) -> tuple[Config, dict[str, str]]:
    environ = {
        "HEADEND_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'headend.db'}",
        "HEADEND_MQTT_HOST": "",  # embedded broker
        "HEADEND_MQTT_PORT": str(broker_port),
        "HEADEND_MQTT_CLIENT_ID": "headend-demo",
        "HEADEND_POLLING_INTERVAL_S": "8",
        "HEADEND_POLLING_TIMEOUT_S": "5",
        "HEADEND_POLLING_PROFILE_INTERVAL_S": "60",
        "HEADEND_RELAY_RETRY_BASE_S": "1",
        "HEADEND_RELAY_RETRY_MAX_BACKOFF_S": "5",
        "HEADEND_RELAY_OVERDUE_AFTER_S": "60",
        "HEADEND_LOGGING_LEVEL": "INFO",
        "HEADEND_LOGGING_FORMAT": "console",
    }
    return load_config(None, environ), environ


def _log_to_file(path: Path) -> None:
    configure_daemon_logging(LoggingConfig(level="INFO", format="console"))
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root.addHandler(handler)


async def _watch(host: str, port: int, view: DemoView, ready: asyncio.Event) -> None:
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


async def _feed(
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


async def run_demo(
    *,
    meters: int = 6,
    duration: float | None = None,
    workdir: Path | None = None,
    console: Console | None = None,
) -> bool:
    """Run the demo; returns True when every meter ended where the script says it must."""
    console = console or Console()
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="headend-")))
        workdir.mkdir(parents=True, exist_ok=True)
        return await _run(meters, duration, workdir, console)
    return False  # pragma: no cover - the with block always returns


async def _run(meters: int, duration: float | None, workdir: Path, console: Console) -> bool:
    plain = duration is not None or not console.is_terminal
    script = DemoScript.build(meters)
    scale = 1.0
    if duration is not None and script.length_s > duration * 0.6:
        scale = duration * 0.6 / script.length_s
    console.print(f"demo: work directory {workdir} (head-end log: headend.log)", highlight=False)
    _log_to_file(workdir / "headend.log")
    broker_port = free_port()
    config, environ = demo_config(workdir, broker_port)
    async with start_simulator(workdir, meters) as simulator:
        master_key = config.open_master_key(environ)
        db = await Database.open(config.database.url)
        try:
            result = await import_inventory(db, simulator.inventory, master_key)
        finally:
            await db.dispose()
        console.print(f"demo: {result.total} simulated meters imported", highlight=False)
        meter_ids = [
            line.split(",", 1)[0] for line in simulator.inventory.read_text().splitlines()[1:]
        ]
        daemon = Daemon(
            config,
            environ=environ,
            tuning=DaemonTuning(
                command_scan_s=0.5, install_signal_handlers=False, poll_retry_base_s=2.0
            ),
        )
        view = DemoView(meter_ids, config.mqtt.headend_prefix, console, plain)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        try:
            async with asyncio.TaskGroup() as tg:
                daemon_task = tg.create_task(daemon.run())
                async with asyncio.timeout(30):
                    await daemon.ready.wait()
                watching = asyncio.Event()
                watcher = tg.create_task(_watch("127.0.0.1", broker_port, view, watching))
                async with asyncio.timeout(15):
                    await watching.wait()
                fed = asyncio.Event()

                async def feed_billing() -> None:
                    try:
                        await _feed(
                            script, meter_ids, simulator, "127.0.0.1", broker_port, view, scale
                        )
                    except aiomqtt.MqttError as exc:
                        # Ctrl-C can cut the feed's connection mid-publish; the summary says
                        # the script did not finish (and judges it when nobody stopped it).
                        view.log(f"billing feed stopped: {exc}")
                        return
                    fed.set()

                feed = tg.create_task(feed_billing())
                await _show(view, console, plain, duration, stop)
                # Judge the relays only if the script ran to its end, or nobody cut it short.
                script_finished = fed.is_set() or not stop.is_set()
                feed.cancel()
                daemon.request_stop()
                await daemon_task
                watcher.cancel()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
        return await _summary(
            script, meter_ids, simulator, view, console, config, judge=script_finished
        )


async def _show(
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


async def _summary(
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
