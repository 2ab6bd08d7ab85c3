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
import signal
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import structlog

from headend.collection.poller import Poller, PollSettings
from headend.collection.scheduler import Scheduler
from headend.collection.service import CollectionService
from headend.config import Config, LoggingConfig
from headend.listener.service import ListenerService, listener_ports
from headend.meters.access import MeterAccess
from headend.meters.line_locks import LineLocks, RelayPressure
from headend.mqtt.backlog import BacklogWatch
from headend.mqtt.bridge import MqttBridge
from headend.mqtt.broker import EmbeddedBroker
from headend.mqtt.durable_outbox import DurableOutbox
from headend.mqtt.notifier import Notifier
from headend.mqtt.topics import Topics
from headend.observability.http import OpsServer
from headend.observability.logs import configure_logging, get_logger, instance_id
from headend.observability.probes import ops_server, systemd_notifier
from headend.observability.tasks import dump_tasks
from headend.prepaid.limiter import LimitWorker
from headend.prepaid.quiet_hours import QuietHours
from headend.prepaid.watch import PrepaidWatch
from headend.relay.controller import ControllerSettings, RelayController
from headend.relay.intake import BalanceIntake
from headend.requests.service import RequestService, RequestSettings
from headend.storage import Database, Repository, installation
from headend.storage.batching import ReadingBatcher
from headend.storage.retention import ReadingRetention

__all__ = ["Daemon", "DaemonTuning", "configure_daemon_logging", "run_daemon"]

log = get_logger(__name__)


async def _open_database(config: Config, *, run_migrations: bool) -> Database:
    """In a cluster, a frozen member's locks go within a lease: the server ends its
    transactions idle for half a lease (storage/db.py), the others end its sessions by name
    (cluster/evict.py)."""
    if not config.cluster.enabled:
        return await Database.open(config.database.url, run_migrations=run_migrations)
    from headend.cluster.evict import application_name

    return await Database.open(
        config.database.url,
        run_migrations=run_migrations,
        idle_in_transaction_s=config.cluster.lease_s / 2,
        application_name=application_name(instance_id(config.cluster.instance_id)),
    )


def _utc_now() -> datetime:
    return datetime.now(UTC)


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
    prepaid_check_s: float = 60.0  # forecast, anomaly hints and statements between events
    # The relay path's clock (balance decisions, grace and quiet hours, command timing):
    # tests put it at the edge of a quiet window. None: the real one.
    clock: Callable[[], datetime] | None = None


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
        self.listener: ListenerService | None = None
        self.broker: EmbeddedBroker | None = None
        self.broker_address: tuple[str, int] | None = None
        self.ops: OpsServer | None = None  # /metrics, /healthz, /readyz ([metrics] port)
        self.cluster: Any = None  # headend.cluster.leases.ClusterOwnership with [cluster]

    def __repr__(self) -> str:
        return f"Daemon(database={self.config.database.dialect}, ready={self.ready.is_set()})"

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def run(self) -> None:
        config = self.config
        # Every line of this daemon's tasks says which instance wrote it.
        structlog.contextvars.bind_contextvars(instance_id=instance_id(config.cluster.instance_id))
        master_key = config.open_master_key(self.environ)  # before anything connects
        if config.mqtt.password_in_clear:
            log.warning(
                "mqtt.password is sent to the broker without TLS: anyone on the path can read "
                "it; set [mqtt.tls] (or use a broker on this box only)"
            )
        db = await _open_database(config, run_migrations=True)
        self.db = db
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        try:
            if self.tuning.install_signal_handlers:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                        loop.add_signal_handler(sig, self._on_signal, sig)
                        installed.append(sig)
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(signal.SIGUSR1, dump_tasks)  # where it waits
                    installed.append(signal.SIGUSR1)
            async with contextlib.AsyncExitStack() as stack:
                if config.metrics.port:  # up from the start: /readyz says "starting" meanwhile
                    self.ops = await stack.enter_async_context(ops_server(self))
                await stack.enter_async_context(systemd_notifier(self))  # Type=notify
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
            structlog.contextvars.unbind_contextvars("instance_id")

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
        relay_db = await _open_database(config, run_migrations=False)
        self.relay_db = relay_db
        clock = tuning.clock or _utc_now
        relay_repository = Repository(
            relay_db,
            warning_threshold=config.notifications.warning_threshold,
            quiet_hours=QuietHours.from_config(config.prepaid),
            limit_on_arrears=config.prepaid.arrears_action == "limit",
            clock=clock,
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
        mqtt_settings = config.mqtt
        if config.cluster.enabled:  # a member of a cluster: headend/cluster/
            from headend.cluster.leases import ClusterOwnership

            member = instance_id(config.cluster.instance_id)
            mqtt_settings = replace(config.mqtt, client_id=f"{config.mqtt.client_id}-{member}")
            self.cluster = ClusterOwnership(
                relay_db, member, config.cluster.lease_s, load=lambda: _load(self)
            )
            access.ownership = self.cluster
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
            clock=clock,
        )
        self.controller = controller
        intake = BalanceIntake(
            relay_repository,
            notifier,
            controller,
            pressure=pressure,
            clock=clock,
            prepaid=config.prepaid,
        )
        requests = RequestService(
            access,
            notifier,
            RequestSettings(timeout_s=config.polling.timeout_s),
            pressure=pressure,
        )
        bridge = MqttBridge(
            mqtt_settings,
            topics,
            outbox,
            intake.handle,
            host=host,
            port=port,
            timeout_s=tuning.mqtt_timeout_s,
            backoff_max_s=tuning.mqtt_backoff_max_s,
            share_group=config.mqtt.share_group if config.cluster.enabled else None,
            on_request=requests.submit,
            mqtt5=not config.mqtt.embedded,  # amqtt speaks MQTT 3.1.1 only
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
            readings_sink=readings if self.cluster is None else _fenced(readings, self.cluster),
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
        prepaid_watch = PrepaidWatch(
            repository, notifier, config.prepaid, every_s=tuning.prepaid_check_s
        )
        tcp_port, udp_port = listener_ports(config.listener)
        listener = None
        if tcp_port is not None or udp_port is not None:
            listener = ListenerService(
                access,
                repository,
                notifier,
                host=config.listener.host,
                tcp_port=tcp_port,
                udp_port=udp_port,
                relay=controller,
                collection=collection,
                refresh_s=tuning.inventory_refresh_s,
            )
        self.listener = listener

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
            cluster_tasks = []
            if self.cluster is not None:
                from headend.cluster.notify import CommandListener

                self.cluster.listeners.add(collection.ownership_changed)
                self.cluster.resumed.add(controller.wake)
                wakeups = CommandListener(config.database.url, controller.wake)
                cluster_tasks = [
                    tg.create_task(guarded("cluster", self.cluster.run()), name="leases"),
                    tg.create_task(wakeups.run(), name="listen"),
                ]
                await self.cluster.ready.wait()  # the first claim, before any poll
            workers = [
                tg.create_task(guarded("relay", controller.run()), name="relay"),
                tg.create_task(backlog.run(), name="outbox-backlog"),
                tg.create_task(prepaid_watch.run(), name="prepaid"),
                tg.create_task(guarded("requests", requests.run()), name="requests"),
            ]
            if config.prepaid.arrears_action == "limit":
                limiter = LimitWorker(
                    relay_repository,
                    access,
                    notifier,
                    limit_w=config.prepaid.limit_w,
                    every_s=tuning.command_scan_s,
                    retry_base_s=config.relay.retry_base_s,
                    retry_max_s=config.relay.retry_max_backoff_s,
                    clock=clock,
                )
                workers.append(tg.create_task(limiter.run(), name="limiter"))
            retention = ReadingRetention(
                repository.reading_partitions, config.storage.retention_days
            )
            workers.append(tg.create_task(retention.run(), name="readings-retention"))
            if tuning.collection:
                workers.append(
                    tg.create_task(guarded("collection", collection.run()), name="collection")
                )
            if listener is not None:
                workers.append(tg.create_task(guarded("listener", listener.run()), name="listener"))
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
            if listener is not None:
                listener.stop()
            for task in workers:
                task.cancel()
            await asyncio.wait(workers)
            for task in cluster_tasks:  # after the sessions: the leases are given back
                task.cancel()
            if cluster_tasks:
                await asyncio.wait(cluster_tasks)
            writer.cancel()  # after the polls: its last flush stores what they read
            await asyncio.wait([writer])
            await bridge.stop()
            outbox_writer.cancel()  # after the bridge's last flush; what is left stays stored
            await asyncio.wait([outbox_writer])
            stop_waiter.cancel()
        if failures:
            raise RuntimeError(f"head-end stopped on an error: {failures[0]}") from failures[0]
        log.info("head-end stopped")


def _fenced(readings: ReadingBatcher, cluster: Any) -> Any:
    """A member's polls record their read-backs only under a held lease (cluster/fenced.py)."""
    from headend.cluster.fenced import FencedReadings

    return FencedReadings(readings, cluster)


def _load(daemon: Daemon) -> dict[str, Any]:
    """A member's load, for `headend status` (cluster/members.py)."""
    collection, controller = daemon.collection, daemon.controller
    return {
        "polls_running": collection.running if collection else 0,
        "polls_ok": collection.polls_ok if collection else 0,
        "polls_failed": collection.polls_failed if collection else 0,
        "relay_workers": len(controller._workers) if controller else 0,
    }


async def run_daemon(
    config: Config,
    *,
    environ: Mapping[str, str] | None = None,
    tuning: DaemonTuning | None = None,
) -> None:
    await Daemon(config, environ=environ, tuning=tuning).run()


def configure_daemon_logging(settings: LoggingConfig) -> None:
    """JSON lines (or readable text) on stderr, for stdlib and structlog loggers alike
    (headend/observability/logs.py)."""
    configure_logging(settings.level, settings.format)
