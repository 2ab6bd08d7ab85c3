"""`headend run`: the collection daemon, assembled from its parts.

The parts are built in dependency order, each handed what it needs: config -> database
(migrated) and repositories -> outbox -> notifier -> meter access -> relay controller -> MQTT
bridge (embedded broker when no host is configured; it hands balance events to the controller
and drains the outbox) -> collection, all run in one asyncio.TaskGroup. SIGTERM/SIGINT stop
it cleanly: relay workers and polls are cancelled (each session's exit releases its
association), the bridge finishes the balance event in hand, flushes the outbox and says
`offline`. Nothing is lost by stopping at any point: commands are in the database and resume
on the next start."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from headend.collection.poller import Poller, PollSettings
from headend.collection.scheduler import Scheduler
from headend.collection.service import CollectionService
from headend.config import Config, LoggingConfig
from headend.meters.access import MeterAccess
from headend.meters.line_locks import LineLocks, RelayPressure
from headend.mqtt.backlog import BacklogWatch
from headend.mqtt.bridge import MqttBridge
from headend.mqtt.broker import EmbeddedBroker
from headend.mqtt.durable_outbox import DurableOutbox
from headend.mqtt.notifier import Notifier
from headend.mqtt.topics import Topics
from headend.relay.controller import ControllerSettings, RelayController
from headend.relay.intake import BalanceIntake
from headend.storage import Database, Repository, installation
from headend.storage.batching import ReadingBatcher

__all__ = ["Daemon", "DaemonTuning", "configure_daemon_logging", "run_daemon"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DaemonTuning:
    """Knobs that are not in the config file (tests and the demo shorten them)."""

    command_scan_s: float = 1.0
    inventory_refresh_s: float = 60.0
    mqtt_backoff_max_s: float = 30.0
    mqtt_timeout_s: float = 10.0
    poll_retry_base_s: float = 30.0
    unreachable_after: int = 3
    collection: bool = True
    install_signal_handlers: bool = True
    outbox_alarm_depth: int = 10_000
    outbox_check_s: float = 5.0


class Daemon:
    """One head-end process. `run()` until `request_stop()` (or SIGTERM/SIGINT)."""

    def __init__(
        self,
        config: Config,
        *,
        environ: Mapping[str, str] | None = None,
        tuning: DaemonTuning | None = None,
    ) -> None:
        self.config = config
        self.environ = environ
        self.tuning = tuning or DaemonTuning()
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self.db: Database | None = None
        self.relay_db: Database | None = None
        self.repository: Repository | None = None
        self.bridge: MqttBridge | None = None
        self.controller: RelayController | None = None
        self.backlog: BacklogWatch | None = None
        self.collection: CollectionService | None = None
        self.broker: EmbeddedBroker | None = None
        self.broker_address: tuple[str, int] | None = None

    def __repr__(self) -> str:
        return f"Daemon(database={self.config.database.dialect}, ready={self.ready.is_set()})"

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        config = self.config
        master_key = config.open_master_key(self.environ)  # before anything connects
        if config.mqtt.password_in_clear:
            log.warning(
                "mqtt.password is sent to the broker without TLS: anyone on the path can read "
                "it; set [mqtt.tls] (or use a broker on this box only)"
            )
        db = await Database.open(config.database.url)
        self.db = db
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        try:
            if self.tuning.install_signal_handlers:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                        loop.add_signal_handler(sig, self._on_signal, sig)
                        installed.append(sig)
            async with contextlib.AsyncExitStack() as stack:
                host, port = config.mqtt.host, config.mqtt.port
                if config.mqtt.embedded:
                    self.broker = EmbeddedBroker(config.mqtt.embedded_host, port)
                    await stack.enter_async_context(self.broker)
                    host, port = self.broker.local_address, self.broker.port
                    log.info("embedded MQTT broker on %s:%d", self.broker.host, port)
                assert host is not None
                self.broker_address = (host, port)
                await self._serve(db, master_key, host, port)
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            if self.relay_db is not None:
                await self.relay_db.dispose()
            await db.dispose()

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("%s: stopping", sig.name)
        self._stop.set()

    async def _serve(self, db: Database, master_key: Any, host: str, port: int) -> None:
        config = self.config
        tuning = self.tuning
        repository = Repository(db, warning_threshold=config.notifications.warning_threshold)
        self.repository = repository
        # The relay path gets its own engine (connection pool): a balance event or a command
        # never waits for a connection behind a thousand polls.
        relay_db = await Database.open(config.database.url, run_migrations=False)
        self.relay_db = relay_db
        relay_repository = Repository(
            relay_db, warning_threshold=config.notifications.warning_threshold
        )
        readings = ReadingBatcher(repository)
        # Every outgoing message is a row in the database until the broker has it; rows are
        # staged in the transaction of the change they report (storage/unit.py).
        outbox = DurableOutbox(repository.outbox)
        relay_db.commit_listeners.add(outbox.wake)
        topics = Topics(config.mqtt.billing_prefix, config.mqtt.headend_prefix)
        notifier = Notifier(outbox, topics)
        backlog = BacklogWatch(
            repository,
            notifier,
            alarm_depth=tuning.outbox_alarm_depth,
            every_s=tuning.outbox_check_s,
        )
        self.backlog = backlog
        access = MeterAccess(
            db,
            repository,
            master_key,
            command_repository=relay_repository,
            locks=LineLocks(),
            timeout_s=config.polling.timeout_s,
            system_title=await installation.system_title(db),
        )
        await access.refresh()  # every meter's secrets open, or we stop here naming it
        pressure = RelayPressure()
        controller = RelayController(
            relay_repository,
            access,
            notifier,
            ControllerSettings(
                overdue_after_s=config.relay.overdue_after_s,
                retry_base_s=config.relay.retry_base_s,
                retry_max_backoff_s=config.relay.retry_max_backoff_s,
                scan_interval_s=tuning.command_scan_s,
                max_concurrent=config.polling.concurrency,
                session_budget_s=max(30.0, config.polling.timeout_s * 12),
            ),
            pressure=pressure,
        )
        self.controller = controller
        intake = BalanceIntake(relay_repository, notifier, controller, pressure=pressure)
        bridge = MqttBridge(
            config.mqtt,
            topics,
            outbox,
            intake.handle,
            host=host,
            port=port,
            timeout_s=tuning.mqtt_timeout_s,
            backoff_max_s=tuning.mqtt_backoff_max_s,
            on_balance_batch=intake.handle_batch,  # group commit (issue 10)
        )
        self.bridge = bridge
        polling = config.polling
        scheduler = Scheduler(
            interval_s=polling.interval_s,
            load_profile_interval_s=polling.profile_interval_s,
            billing_interval_s=max(polling.profile_interval_s, 86400.0),
            clock_check_interval_s=polling.clock_check_interval_s,
            retry_base_s=min(tuning.poll_retry_base_s, polling.interval_s),
            unreachable_after=max(1, polling.retries),
            max_backoff_s=polling.max_backoff_s,
        )
        poller = Poller(
            repository,
            notifier,
            PollSettings(
                obis=polling.obis,
                load_profile=polling.load_profile,
                billing_profile=polling.billing_profile,
                clock_max_drift_s=polling.clock_max_drift_s,
            ),
            readings_sink=readings,
        )
        collection = CollectionService(
            access,
            poller,
            scheduler,
            repository,
            notifier,
            concurrency=polling.concurrency,
            session_budget_s=max(60.0, polling.timeout_s * 30),
            refresh_s=tuning.inventory_refresh_s,
            pressure=pressure,
        )
        self.collection = collection

        async with asyncio.TaskGroup() as tg:
            bridge_task = tg.create_task(bridge.run(), name="mqtt")
            failures: list[BaseException] = []

            async def guarded(name: str, work: Coroutine[Any, Any, None]) -> None:
                """A part that fails stops the daemon cleanly (not through the TaskGroup,
                which would skip the orderly shutdown) and makes it exit non-zero."""
                try:
                    await work
                except Exception as exc:
                    failures.append(exc)
                    log.error("%s stopped on an error", name, exc_info=exc)
                    self._stop.set()

            writer = tg.create_task(guarded("readings", readings.run()), name="readings")
            outbox_writer = tg.create_task(guarded("outbox", outbox.run()), name="outbox")
            workers = [
                tg.create_task(guarded("relay", controller.run()), name="relay"),
                tg.create_task(backlog.run(), name="outbox-backlog"),
            ]
            if tuning.collection:
                workers.append(
                    tg.create_task(guarded("collection", collection.run()), name="collection")
                )
            log.info(
                "head-end running: %d meter(s), database %s, broker %s:%d",
                len(access.meter_ids),
                config.database.dialect,
                host,
                port,
            )
            self.ready.set()
            stop_waiter = tg.create_task(self._stop.wait(), name="stop")
            await asyncio.wait([stop_waiter, bridge_task], return_when=asyncio.FIRST_COMPLETED)
            # Stop: relay and polls first (their sessions release associations on the way
            # out), then the bridge, so what they published still goes out.
            controller.stop()
            collection.stop()
            for task in workers:
                task.cancel()
            await asyncio.wait(workers)
            writer.cancel()  # after the polls: its last flush stores what they read
            await asyncio.wait([writer])
            await bridge.stop()
            outbox_writer.cancel()  # after the bridge's last flush; what is left stays stored
            await asyncio.wait([outbox_writer])
            stop_waiter.cancel()
        if failures:
            raise RuntimeError(f"head-end stopped on an error: {failures[0]}") from failures[0]
        log.info("head-end stopped")


async def run_daemon(
    config: Config,
    *,
    environ: Mapping[str, str] | None = None,
    tuning: DaemonTuning | None = None,
) -> None:
    await Daemon(config, environ=environ, tuning=tuning).run()


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_daemon_logging(settings: LoggingConfig) -> None:
    """JSON lines (or readable text) on stderr, for stdlib and structlog loggers alike."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.format == "json":
        formatter: logging.Formatter = _JsonFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(settings.level)
    for noisy in ("amqtt", "transitions", "aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(
            max(logging.WARNING, logging.getLevelName(settings.level))
        )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            structlog.dev.ConsoleRenderer(colors=False)
            if settings.format != "json"
            else structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(settings.level)),
        cache_logger_on_first_use=False,
    )
