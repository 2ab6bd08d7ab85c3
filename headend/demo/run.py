"""The demo assembled: the simulator first (its inventory is imported before the daemon
starts), then the daemon with its embedded broker, the watcher and the billing feed; the
verdict is read at the simulator before it stops."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
from rich.console import Console

from headend.config import Config, load_config
from headend.daemon import Daemon, DaemonTuning
from headend.demo.billing import DemoScript, play
from headend.demo.simulator import start_simulator
from headend.demo.verdict import verdict
from headend.demo.view import DemoView, show, watch
from headend.meters.inventory import import_inventory
from headend.mqtt.broker import free_port
from headend.observability.logs import configure_logging
from headend.storage import Database

# Closing the terminal (SIGHUP) stops the demo like Ctrl-C does: the summary, the simulator
# stopped, nothing left behind.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def quiet_window(start: datetime, seconds: float) -> str:
    """A quiet-hours window from `start` for `seconds` (UTC, to the second): the demo's
    first disconnects are held until it ends, and the feed says so."""
    end = start + timedelta(seconds=seconds)
    return json.dumps([{"from": f"{start:%H:%M:%S}", "to": f"{end:%H:%M:%S}"}])


def demo_config(
    workdir: Path, broker_port: int, listener_port: int = 0, quiet_s: float = 0.0
) -> tuple[Config, dict[str, str]]:
    environ = {
        "HEADEND_LISTENER_HOST": "127.0.0.1",  # the demo's meters push here
        "HEADEND_LISTENER_TCP_PORT": str(listener_port),
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
        "HEADEND_METRICS_PORT": str(free_port()),  # printed at start: scrape it while it runs
    }
    if quiet_s > 0:
        environ["HEADEND_PREPAID_NO_DISCONNECT"] = quiet_window(datetime.now(UTC), quiet_s)
    return load_config(None, environ), environ


def _log_to_file(path: Path) -> None:
    configure_logging("INFO", "console", handler=logging.FileHandler(path))


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
    listener_port = free_port()
    config, environ = demo_config(workdir, broker_port, listener_port)
    async with start_simulator(workdir, meters, f"127.0.0.1:{listener_port}") as simulator:
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
        # Quiet hours from now until shortly after the feed's first disconnects: they are
        # held (disconnect_scheduled) and run when the window ends.
        config, environ = demo_config(
            workdir, broker_port, listener_port, quiet_s=3.0 + 10.0 * scale
        )
        daemon = Daemon(
            config,
            environ=environ,
            tuning=DaemonTuning(
                command_scan_s=0.5,
                install_signal_handlers=False,
                poll_retry_base_s=2.0,
                prepaid_check_s=2.0,
            ),
        )
        view = DemoView(meter_ids, config.mqtt.headend_prefix, console, plain)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        try:
            async with asyncio.TaskGroup() as tg:
                daemon_task = tg.create_task(daemon.run())
                async with asyncio.timeout(30):
                    await daemon.ready.wait()
                if daemon.ops is not None:
                    console.print(
                        f"demo: metrics {daemon.ops.url}/metrics (health: /healthz, /readyz)",
                        highlight=False,
                    )
                watching = asyncio.Event()
                watcher = tg.create_task(watch("127.0.0.1", broker_port, view, watching))
                async with asyncio.timeout(15):
                    await watching.wait()
                fed = asyncio.Event()

                async def feed_billing() -> None:
                    try:
                        await play(
                            script, meter_ids, simulator, "127.0.0.1", broker_port, view, scale
                        )
                    except aiomqtt.MqttError as exc:
                        # Ctrl-C can cut the feed's connection mid-publish; the summary says
                        # the script did not finish (and judges it when nobody stopped it).
                        view.log(f"billing feed stopped: {exc}")
                        return
                    fed.set()

                feed = tg.create_task(feed_billing())
                await show(view, console, plain, duration, stop)
                # Judge the relays only if the script ran to its end, or nobody cut it short.
                script_finished = fed.is_set() or not stop.is_set()
                feed.cancel()
                daemon.request_stop()
                await daemon_task
                watcher.cancel()
        finally:
            for sig in STOP_SIGNALS:
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
        return await verdict(
            script, meter_ids, simulator, view, console, config, judge=script_finished
        )
