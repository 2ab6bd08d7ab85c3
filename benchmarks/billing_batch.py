"""Billing batch (issue 10): ten thousand disconnects published at once, payments behind them.

A `dlms-sim` fleet (own process) is imported into a fresh database, `headend run` (own process)
serves it through a Mosquitto of this run's own (own process; its queue per client unbounded
and `max_inflight_messages` as large as the head-end's batch, so that the broker neither drops
nor trickles the batch). First, untimed, the `--payments` meters are disconnected. Then
`--events` balance events below zero (each for another meter: a disconnect each) are published
as fast as the client can, and `--payment-delay-s` later one payment for each of the
disconnected meters (a reconnect each). Polling is off unless `--poll-rate` asks for it.

Figures: `drain_s` (first publish -> last `confirmed` message), `events_committed_per_s`
(events / first publish -> last `queued` message: the event is committed and its command
created; it includes the outbox's lag), `reconnect_p50_s` / `reconnect_p99_s` (payment
publish -> its `confirmed`), `outbox_lag_p99_s` (a command message's `ts`, stamped in the
transaction of its state change, -> its arrival at a subscriber), `confirmed`, `failures`,
CPU. Beside them, from the same run: a direct relay session on an idle meter (the least a
reconnect can take) and the broker's round trip.

    python -m benchmarks billing-batch --meters 10000 --events 10000 --payments 100 \\
        --database postgresql --json"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks._common import (
    emit,
    goal,
    machine_busy_s,
    others_cpu_percent,
    parser,
    percentile,
    proc_cpu_s,
    raise_fd_limit,
    rounded,
)
from benchmarks._proc import Child, sim_fleet, spawn
from benchmarks.relay_latency import daemon_argv, database, direct_relay_ops, import_fleet

DRAIN_GOAL_S = 45.0
COMMIT_GOAL_PER_S = 2000.0
RECONNECT_P99_GOAL_S = 2.0
OUTBOX_LAG_GOAL_S = 1.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def mosquitto(root: Path, inflight: int) -> Any:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = _free_port()
    conf = root / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        f"max_inflight_messages {inflight}\nmax_queued_messages 0\n"
    )
    async with spawn([binary, "-c", str(conf)]) as child:
        async with asyncio.timeout(10):
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                break
        yield child, ("127.0.0.1", port)


def write_config(path: Path, db_url: str, broker: tuple[str, int], prefix: str, args: Any) -> None:
    interval = max(args.meters / args.poll_rate, 1.0) if args.poll_rate > 0 else 31_536_000
    path.write_text(
        f'[database]\nurl = "{db_url}"\n\n'
        f'[mqtt]\nhost = "{broker[0]}"\nport = {broker[1]}\nclient_id = "{prefix}-headend"\n'
        f'billing_prefix = "{prefix}/billing"\nheadend_prefix = "{prefix}/headend"\n\n'
        f"[polling]\ninterval_s = {interval}\nconcurrency = {args.concurrency}\n"
        f"timeout_s = 10\nload_profile = false\nbilling_profile = false\n"
        f"clock_check_interval_s = 31536000\n\n"
        '[logging]\nlevel = "INFO"\nformat = "json"\n'
    )


def _body(meter_id: str, balance: str, seq: int) -> tuple[str, bytes]:
    event_id = uuid.uuid4().hex
    body = {
        "meter_id": meter_id,
        "balance": balance,
        "currency": "CNY",
        "seq": seq,
        "event_id": event_id,
        "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return event_id, json.dumps(body).encode()


class Watch:
    """What the billing side sees of the commands: when each step of each event's command
    arrived (wall clock), and each message's lag behind its own `ts`."""

    def __init__(self) -> None:
        self.steps: dict[str, dict[str, float]] = {"queued": {}, "sent": {}, "confirmed": {}}
        self.lags: list[float] = []
        self.failed: dict[str, str] = {}
        self.statuses: dict[str, int] = {}
        self.wanted: set[str] = set()
        self.changed = asyncio.Event()
        self.lost: BaseException | None = None
        """Why the subscription ended (the broker dropped this client): nothing more can be
        seen, so a wait for confirmations fails at once instead of at its timeout."""

    async def listen(self, client: Any) -> None:
        try:
            await self._listen(client)
        except Exception as exc:  # reported by `confirmed`, the run's failure
            self.lost = exc
            self.changed.set()

    async def _listen(self, client: Any) -> None:
        async for message in client.messages:
            arrived = time.time()
            try:
                payload = json.loads(bytes(message.payload))
            except (TypeError, ValueError):
                continue
            status = payload.get("status")
            self.statuses[status] = self.statuses.get(status, 0) + 1
            with contextlib.suppress(KeyError, TypeError, ValueError):
                stamped = datetime.fromisoformat(payload["ts"].replace("Z", "+00:00"))
                self.lags.append(arrived - stamped.timestamp())
            event_id = payload.get("event_id")
            if event_id not in self.wanted:
                continue
            if status in self.steps:
                self.steps[status].setdefault(event_id, arrived)
            elif status in ("failed", "escalated"):
                self.failed[event_id] = str(payload.get("error"))
            if status == "confirmed":
                self.changed.set()

    async def confirmed(self, event_ids: list[str], limit_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit_s):
                while any(e not in self.steps["confirmed"] for e in event_ids):
                    if self.lost is not None:
                        raise RuntimeError(f"the billing side lost the broker: {self.lost!r}")
                    self.changed.clear()
                    await self.changed.wait()
                return True
        return False


async def billing(
    broker: tuple[str, int],
    prefix: str,
    disconnects: list[str],
    payers: list[str],
    args: Any,
    daemon: Child,
) -> dict[str, Any]:
    import aiomqtt

    watch = Watch()
    async with aiomqtt.Client(*broker, identifier=f"{prefix}-billing") as client:
        await client.subscribe(f"{prefix}/headend/meters/+/commands", qos=1)
        listener = asyncio.create_task(watch.listen(client))
        topic = f"{prefix}/billing/balance/{{}}"
        # Untimed: the payers' meters are disconnected first.
        first = []
        for meter_id in payers:
            event_id, body = _body(meter_id, "-5.00", 1)
            watch.wanted.add(event_id)
            first.append(event_id)
            await client.publish(topic.format(meter_id), body, qos=1)
        if not await watch.confirmed(first, args.settle_timeout):
            raise RuntimeError("the payers' meters were not disconnected in time")
        await asyncio.sleep(1.0)
        watch.lags.clear()
        rtt = []
        for _ in range(20):
            began = time.perf_counter()
            await client.publish(f"{prefix}/echo", b"x", qos=1)
            rtt.append(time.perf_counter() - began)

        cpu0, busy0 = daemon.cpu_s(), machine_busy_s()
        ours0 = time.process_time()
        sent: dict[str, float] = {}
        batch_ids: list[str] = []
        began = time.time()
        for meter_id in disconnects:
            event_id, body = _body(meter_id, "-5.00", 1)
            watch.wanted.add(event_id)
            batch_ids.append(event_id)
            sent[event_id] = time.time()
            await client.publish(topic.format(meter_id), body, qos=1)
        publish_s = time.time() - began
        delay = began + args.payment_delay_s - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        payment_ids = []
        for meter_id in payers:
            event_id, body = _body(meter_id, "50.00", 2)
            watch.wanted.add(event_id)
            payment_ids.append(event_id)
            sent[event_id] = time.time()
            await client.publish(topic.format(meter_id), body, qos=1)
        await watch.confirmed(batch_ids + payment_ids, args.settle_timeout)
        wall = time.time() - began
        cpu1, busy1 = daemon.cpu_s(), machine_busy_s()
        ours = time.process_time() - ours0
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
    confirmed = watch.steps["confirmed"]
    queued = watch.steps["queued"]
    done = [confirmed[e] for e in batch_ids + payment_ids if e in confirmed]
    last_queued = max((queued[e] for e in batch_ids if e in queued), default=None)
    reconnects = [confirmed[e] - sent[e] for e in payment_ids if e in confirmed]
    return {
        "publish_s": publish_s,
        "wall_s": wall,
        "drain_s": (max(done) - began) if done else None,
        "commit_span_s": None if last_queued is None else last_queued - began,
        "committed": sum(1 for e in batch_ids if e in queued),
        "confirmed": len(done),
        "reconnects": reconnects,
        "reconnects_queued": [queued[e] - sent[e] for e in payment_ids if e in queued],
        "lags": watch.lags,
        "failed": dict(list(watch.failed.items())[:5]),
        "statuses": watch.statuses,
        "daemon_cpu_s": cpu1 - cpu0,
        "busy_s": busy1 - busy0,
        "ours_s": ours,
        "broker_rtt": rtt,
    }


async def run(args: Any) -> dict[str, Any]:
    fds = raise_fd_limit(args.concurrency + 200)
    prefix = f"bench-bb-{uuid.uuid4().hex[:8]}"
    master_hex = os.urandom(32).hex()
    floor_meters = 5
    fleet_size = max(args.meters, args.events + args.payments + floor_meters)
    result: dict[str, Any] = {
        "benchmark": "billing-batch",
        "meters": fleet_size,
        "events": args.events,
        "payments": args.payments,
        "payment_delay_s": args.payment_delay_s,
        "latency_ms": args.latency_ms,
        "poll_rate_demanded_per_s": args.poll_rate,
        "concurrency": args.concurrency,
        "database": args.database,
        "fd_limit": fds,
    }
    with tempfile.TemporaryDirectory(prefix="bench-bb-") as directory:
        root = Path(directory)
        config = root / "headend.toml"
        async with (
            database(args.database, root, args.postgres_url) as db_url,
            mosquitto(root, args.broker_inflight) as (broker_child, broker),
            sim_fleet(
                fleet_size, latency_ms=args.latency_ms, start_limit_s=args.start_timeout
            ) as fleet,
        ):
            result["imported"] = await import_fleet(db_url, fleet.inventory, master_hex)
            relay = await direct_relay_ops(fleet, list(range(floor_meters)))
            ids = [row["meter_id"] for row in fleet.rows[floor_meters:]]
            payers = ids[: args.payments]
            disconnects = ids[args.payments : args.payments + args.events]
            write_config(config, db_url, broker, prefix, args)
            env = {"HEADEND_MASTER_KEY": master_hex}
            async with spawn(daemon_argv(config), env=env) as daemon:
                began = time.monotonic()
                await daemon.wait_for(lambda t: "head-end running" in t, args.start_timeout)
                result["daemon_start_s"] = rounded(time.monotonic() - began, 2)
                sim0, broker0 = fleet.child.cpu_s(), proc_cpu_s(broker_child.pid)
                outcome = await billing(broker, prefix, disconnects, payers, args, daemon)
                sim = fleet.child.cpu_s() - sim0
                broker_cpu = proc_cpu_s(broker_child.pid) - broker0
                rss, peak = daemon.rss_mb()
                tail = list(daemon.tail)[-5:]
    wall = outcome["wall_s"]
    expected = len(disconnects) + len(payers)
    reconnects = outcome["reconnects"]
    span = outcome["commit_span_s"]
    committed_per_s = outcome["committed"] / span if span else None
    lag_p99 = percentile(outcome["lags"], 99)
    result.update(
        {
            "drain_s": rounded(outcome["drain_s"], 2),
            "events_committed_per_s": rounded(committed_per_s, 1),
            "reconnect_p50_s": rounded(percentile(reconnects, 50), 3),
            "reconnect_p99_s": rounded(percentile(reconnects, 99), 3),
            "reconnect_queued_p50_s": rounded(percentile(outcome["reconnects_queued"], 50), 3),
            "outbox_lag_p50_s": rounded(percentile(outcome["lags"], 50), 3),
            "outbox_lag_p99_s": rounded(lag_p99, 3),
            "confirmed": outcome["confirmed"],
            "failures": expected - outcome["confirmed"],
            "publish_s": rounded(outcome["publish_s"], 2),
            "commit_span_s": rounded(span, 2),
            "floor": {
                "direct_relay_op_p50_s": rounded(percentile(relay, 50), 4),
                "broker_rtt_p50_s": rounded(percentile(outcome["broker_rtt"], 50), 4),
            },
            "daemon_cpu_percent": rounded(outcome["daemon_cpu_s"] / wall * 100, 1),
            "simulator_cpu_percent": rounded(sim / wall * 100, 1),
            "broker_cpu_percent": rounded(broker_cpu / wall * 100, 1),
            "others_cpu_percent": others_cpu_percent(
                outcome["busy_s"],
                outcome["daemon_cpu_s"] + sim + broker_cpu + outcome["ours_s"],
                wall,
            ),
            "daemon_rss_mb": rss,
            "daemon_peak_rss_mb": peak,
            "command_statuses": outcome["statuses"],
            "failed": outcome["failed"],
            "goals": [
                goal(
                    rounded(outcome["drain_s"], 2),
                    DRAIN_GOAL_S,
                    at_least=False,
                    text=f"drain within {DRAIN_GOAL_S:.0f} s",
                ),
                goal(
                    rounded(committed_per_s, 1),
                    COMMIT_GOAL_PER_S,
                    at_least=True,
                    text=f"at least {COMMIT_GOAL_PER_S:.0f} events committed/s",
                ),
                goal(
                    rounded(percentile(reconnects, 99), 3),
                    RECONNECT_P99_GOAL_S,
                    at_least=False,
                    text=f"reconnect p99 within {RECONNECT_P99_GOAL_S:.0f} s",
                ),
                goal(
                    rounded(lag_p99, 3),
                    OUTBOX_LAG_GOAL_S,
                    at_least=False,
                    text=f"outbox lag p99 within {OUTBOX_LAG_GOAL_S:.0f} s",
                ),
            ],
        }
    )
    if result["failures"]:
        result["daemon_log_tail"] = tail
    return result


def main(argv: list[str] | None = None) -> int:
    cli = parser("billing-batch", __doc__ or "")
    cli.add_argument("--meters", type=int, default=10_000)
    cli.add_argument("--events", type=int, default=10_000, help="disconnects published at once")
    cli.add_argument("--payments", type=int, default=100, help="reconnects published after")
    cli.add_argument("--payment-delay-s", type=float, default=1.0)
    cli.add_argument("--latency-ms", type=float, default=100.0, help="simulated answer delay")
    cli.add_argument("--poll-rate", type=float, default=0.0, help="polls/s demanded (0: none)")
    cli.add_argument("--concurrency", type=int, default=1000, help="daemon sessions in flight")
    cli.add_argument("--broker-inflight", type=int, default=200, help="Mosquitto's window")
    cli.add_argument("--settle-timeout", type=float, default=600.0)
    cli.add_argument("--start-timeout", type=float, default=600.0)
    cli.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    cli.add_argument("--postgres-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    args = cli.parse_args(argv)
    result = asyncio.run(run(args))
    emit(result, args.json)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
