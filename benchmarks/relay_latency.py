"""B2 relay latency under load: balance events through a real broker while the daemon polls.

A `dlms-sim` fleet (own process) is imported into a fresh database and `headend run` (own
process) polls it continuously: the polling interval is set so the whole fleet is due once
every `meters / 1000` seconds, the B1 rate. Once polling runs, `--events` balance events
(balance below zero, each for a different meter) go to Mosquitto at `--rate` per second;
the latency of each is from just before its publish to the `confirmed` command message the
daemon publishes after reading the relay state back.

Floors in the same run, measured first on the idle fleet from this process: the broker's
round trip (publish -> own subscription) and one direct relay session (associate, disconnect,
read the state back, release); their sum is the least a confirmed operation can take.

    python -m benchmarks relay-latency --meters 10000 --events 1000 --json"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks._common import (
    emit,
    goal,
    machine_busy_s,
    others_cpu_percent,
    parser,
    percentile,
    pids_named,
    proc_cpu_s,
    raise_fd_limit,
    ratio,
    rounded,
)
from benchmarks._proc import SimFleet, connection_kwargs, sim_fleet, spawn

P99_GOAL_S = 1.0
BROKER = ("127.0.0.1", 1883)


def _broker_up() -> bool:
    try:
        with socket.create_connection(BROKER, timeout=1.0):
            return True
    except OSError:
        return False


# -- floors -------------------------------------------------------------------------------------
async def broker_round_trip(prefix: str, count: int = 50) -> list[float]:
    import aiomqtt

    topic = f"{prefix}/echo"
    times: list[float] = []
    async with aiomqtt.Client(*BROKER, identifier=f"{prefix}-echo") as client:
        await client.subscribe(topic, qos=1)
        for index in range(count):
            began = time.perf_counter()
            await client.publish(topic, str(index), qos=1)
            async with asyncio.timeout(10):
                async for _message in client.messages:
                    break
            times.append(time.perf_counter() - began)
    return times


async def direct_relay_ops(fleet: SimFleet, indices: list[int]) -> list[float]:
    """Disconnect + read back + reconnect again (untimed) on meters no event touches."""
    from drivers.connect import MeterConnection, open_session
    from drivers.session import MemoryInvocationCounterStore

    store = MemoryInvocationCounterStore(start=1)
    times = []
    for index in indices:
        connection = MeterConnection(**connection_kwargs(fleet.rows[index]))
        began = time.perf_counter()
        async with open_session(connection, timeout=10, ic_store=store) as session:
            status = await session.disconnect()
        times.append(time.perf_counter() - began)
        if status.output_state:
            raise RuntimeError("direct relay floor: the meter did not disconnect")
        async with open_session(connection, timeout=10, ic_store=store) as session:
            await session.reconnect()
    return times


# -- the daemon ---------------------------------------------------------------------------------
def write_config(path: Path, db_url: str, prefix: str, args: Any) -> None:
    # --poll-rate 0: no polling (a year's interval), the relay path alone.
    interval = max(args.meters / args.poll_rate, 1.0) if args.poll_rate > 0 else 31_536_000
    path.write_text(
        f'[database]\nurl = "{db_url}"\n\n'
        f'[mqtt]\nhost = "{BROKER[0]}"\nport = {BROKER[1]}\nclient_id = "{prefix}-headend"\n'
        f'billing_prefix = "{prefix}/billing"\nheadend_prefix = "{prefix}/headend"\n\n'
        f"[polling]\ninterval_s = {interval}\nconcurrency = {args.concurrency}\n"
        f"timeout_s = 10\nload_profile = false\nbilling_profile = false\n"
        f"clock_check_interval_s = 31536000\n\n"
        '[logging]\nlevel = "INFO"\nformat = "json"\n'
    )


def daemon_argv(config: Path) -> list[str]:
    script = Path(sys.executable).with_name("headend")
    return [str(script), "run", "--config", str(config)]


async def count_readings(engine: Any) -> int:
    from sqlalchemy import text

    async with engine.connect() as connection:
        return int((await connection.execute(text("SELECT count(*) FROM readings"))).scalar())


@contextlib.asynccontextmanager
async def database(kind: str, root: Path, postgres_url: str) -> Any:
    """A fresh database: a SQLite file, or a PostgreSQL database created for this run."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{root / 'headend.db'}"
        return
    name = f"bench_b2_{uuid.uuid4().hex[:10]}"
    admin = create_async_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    finally:
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


async def import_fleet(db_url: str, inventory: Path, master_hex: str) -> int:
    from headend.meters.inventory import import_inventory
    from headend.meters.secrets import parse_master_key
    from headend.storage import Database

    db = await Database.open(db_url)
    try:
        result = await import_inventory(db, inventory, parse_master_key(master_hex, "bench"))
    finally:
        await db.dispose()
    return result.added


# -- the events ---------------------------------------------------------------------------------
def _stages(steps: dict[str, dict[str, float]], confirmed: dict[str, float]) -> dict[str, Any]:
    """p50 / p99 of publish -> queued (event committed, command created), queued -> sent
    (a relay session has the meter), sent -> confirmed (ACTION and read-back)."""
    queued, sent = steps["queued"], steps["sent"]
    spans = {
        "publish_to_queued": list(queued.values()),
        "queued_to_sent": [sent[e] - queued[e] for e in sent if e in queued],
        "sent_to_confirmed": [confirmed[e] - sent[e] for e in confirmed if e in sent],
    }
    return {
        name: {"p50_s": rounded(percentile(v, 50), 3), "p99_s": rounded(percentile(v, 99), 3)}
        for name, v in spans.items()
    }


async def send_events(
    prefix: str, meter_ids: list[str], rate: float, settle_timeout: float
) -> dict[str, Any]:
    import aiomqtt

    sent: dict[str, float] = {}
    confirmed: dict[str, float] = {}
    # When each lifecycle step of an event's command was seen, for where the time goes.
    steps: dict[str, dict[str, float]] = {"queued": {}, "sent": {}}
    failed: dict[str, str] = {}
    statuses: dict[str, int] = {}
    done = asyncio.Event()

    async def listen(client: aiomqtt.Client) -> None:
        async for message in client.messages:
            arrived = time.perf_counter()
            try:
                payload = json.loads(bytes(message.payload))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                continue
            status = payload.get("status")
            statuses[status] = statuses.get(status, 0) + 1
            event_id = payload.get("event_id")
            if event_id not in sent or event_id in confirmed:
                continue
            if status in steps:
                steps[status].setdefault(event_id, arrived - sent[event_id])
            if status == "confirmed":
                confirmed[event_id] = arrived - sent[event_id]
            elif status in ("failed", "escalated"):
                failed[event_id] = str(payload.get("error"))
            if len(confirmed) == len(meter_ids):
                done.set()

    async with aiomqtt.Client(*BROKER, identifier=f"{prefix}-billing") as client:
        await client.subscribe(f"{prefix}/headend/meters/+/commands", qos=1)
        listener = asyncio.create_task(listen(client))
        began = time.perf_counter()
        for index, meter_id in enumerate(meter_ids):
            delay = began + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            event_id = uuid.uuid4().hex
            body = {
                "meter_id": meter_id,
                "balance": "-5.00",
                "currency": "CNY",
                "seq": 1,
                "event_id": event_id,
                "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            sent[event_id] = time.perf_counter()
            await client.publish(f"{prefix}/billing/balance/{meter_id}", json.dumps(body), qos=1)
        publish_s = time.perf_counter() - began
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(settle_timeout):
                await done.wait()
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
    return {
        "sent": len(sent),
        "publish_s": publish_s,
        "latencies": list(confirmed.values()),
        "stages": _stages(steps, confirmed),
        "failed": failed,
        "statuses": statuses,
        "window_s": time.perf_counter() - began,
    }


async def run(args: Any) -> dict[str, Any]:
    if not _broker_up():
        return {
            "benchmark": "relay-latency",
            "skipped": f"no MQTT broker on {BROKER[0]}:{BROKER[1]}",
            "failures": 0,
        }
    fds = raise_fd_limit(args.concurrency + 200)
    prefix = f"bench-b2-{uuid.uuid4().hex[:8]}"
    master_hex = os.urandom(32).hex()
    floor_meters = min(10, max(1, args.meters // 10))
    events = min(args.events, args.meters - floor_meters)
    result: dict[str, Any] = {
        "benchmark": "relay-latency",
        "meters": args.meters,
        "events": events,
        "rate_per_s": args.rate,
        "latency_ms": args.latency_ms,
        "poll_rate_demanded_per_s": args.poll_rate,
        "database": args.database,
        "fd_limit": fds,
    }
    from sqlalchemy.ext.asyncio import create_async_engine

    with tempfile.TemporaryDirectory(prefix="bench-b2-") as directory:
        root = Path(directory)
        config = root / "headend.toml"
        async with (
            database(args.database, root, args.postgres_url) as db_url,
            sim_fleet(
                args.meters, latency_ms=args.latency_ms, start_limit_s=args.start_timeout
            ) as fleet,
        ):
            imported = await import_fleet(db_url, fleet.inventory, master_hex)
            counter = create_async_engine(db_url)
            rtt = await broker_round_trip(prefix)
            relay = await direct_relay_ops(fleet, list(range(floor_meters)))
            floor = {
                "broker_rtt_p50_s": rounded(percentile(rtt, 50), 4),
                "broker_rtt_p99_s": rounded(percentile(rtt, 99), 4),
                "direct_relay_op_p50_s": rounded(percentile(relay, 50), 4),
                "direct_relay_op_max_s": rounded(max(relay), 4),
            }
            floor_p50 = (percentile(rtt, 50) or 0) + (percentile(relay, 50) or 0)
            floor["sum_p50_s"] = rounded(floor_p50, 4)
            # Events for meters spread over the fleet, none of the floor's.
            step = max(1, (args.meters - floor_meters) // max(events, 1))
            targets = [fleet.rows[floor_meters + i * step]["meter_id"] for i in range(events)]
            write_config(config, db_url, prefix, args)
            env = {"HEADEND_MASTER_KEY": master_hex}
            async with spawn(daemon_argv(config), env=env) as daemon:
                began = time.monotonic()
                await daemon.wait_for(lambda t: "head-end running" in t, args.start_timeout)
                result["daemon_start_s"] = rounded(time.monotonic() - began, 2)
                await asyncio.sleep(args.warmup_s)
                readings0 = await count_readings(counter)
                brokers = pids_named("mosquitto")
                broker0 = sum(proc_cpu_s(pid) for pid in brokers)
                cpu0, sim0, busy0 = daemon.cpu_s(), fleet.child.cpu_s(), machine_busy_s()
                ours0 = time.process_time()
                wall0 = time.monotonic()
                outcome = await send_events(prefix, targets, args.rate, args.settle_timeout)
                wall = time.monotonic() - wall0
                readings1 = await count_readings(counter)
                cpu1, sim1, busy1 = daemon.cpu_s(), fleet.child.cpu_s(), machine_busy_s()
                broker = sum(proc_cpu_s(pid) for pid in brokers) - broker0
                ours = time.process_time() - ours0
                rss, peak = daemon.rss_mb()
                tail = list(daemon.tail)[-5:]
            await counter.dispose()
    latencies = outcome["latencies"]
    missing = events - len(latencies)
    result.update(
        {
            "imported": imported,
            "confirmed": len(latencies),
            "p50_s": rounded(percentile(latencies, 50), 3),
            "p99_s": rounded(percentile(latencies, 99), 3),
            "max_s": rounded(max(latencies, default=0.0), 3),
            "floor": floor,
            "ratio_p50_to_floor": ratio(percentile(latencies, 50), floor_p50),
            "ratio_p99_to_floor": ratio(percentile(latencies, 99), floor_p50),
            "polls_per_s_during_events": rounded((readings1 - readings0) / 4 / wall, 1),
            "daemon_cpu_percent": rounded((cpu1 - cpu0) / wall * 100, 1),
            "simulator_cpu_percent": rounded((sim1 - sim0) / wall * 100, 1),
            "broker_cpu_percent": rounded(broker / wall * 100, 1),
            # The rest: the database server (PostgreSQL) and whatever else shares the machine.
            "others_cpu_percent": others_cpu_percent(
                busy1 - busy0, (cpu1 - cpu0) + (sim1 - sim0) + ours + broker, wall
            ),
            "daemon_rss_mb": rss,
            "daemon_peak_rss_mb": peak,
            "publish_s": rounded(outcome["publish_s"], 2),
            "command_statuses": outcome["statuses"],
            "stages": outcome["stages"],
            "failed": dict(list(outcome["failed"].items())[:5]),
            "failures": missing,
            "goal": goal(
                rounded(percentile(latencies, 99), 3),
                P99_GOAL_S,
                at_least=False,
                text=f"publish-to-confirmed p99 under {P99_GOAL_S:.0f} s",
            ),
        }
    )
    if missing:
        result["daemon_log_tail"] = tail
    return result


def main(argv: list[str] | None = None) -> int:
    cli = parser("relay-latency", __doc__ or "")
    cli.add_argument("--meters", type=int, default=10_000)
    cli.add_argument("--events", type=int, default=1_000)
    cli.add_argument("--rate", type=float, default=100.0, help="balance events per second")
    cli.add_argument("--latency-ms", type=float, default=100.0, help="simulated answer delay")
    cli.add_argument(
        "--poll-rate",
        type=float,
        default=1000.0,
        help="polls/s the daemon's interval demands (0: no polling)",
    )
    cli.add_argument("--concurrency", type=int, default=1000, help="daemon sessions in flight")
    cli.add_argument("--warmup-s", type=float, default=5.0, help="polling before the events")
    cli.add_argument("--settle-timeout", type=float, default=120.0, help="wait for confirmations")
    cli.add_argument("--start-timeout", type=float, default=600.0)
    cli.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    cli.add_argument("--postgres-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    args = cli.parse_args(argv)
    result = asyncio.run(run(args))
    emit(result, args.json)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
