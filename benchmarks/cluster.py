"""Cluster: the same fleet polled by 1, then 2 (...) head-end members on one PostgreSQL, and the
takeover after one member is SIGKILLed.

A `dlms-sim` fleet (own process, with its control port) is imported into a fresh PostgreSQL
database. For each member count in `--members`, that many `headend run` processes with
[cluster] on are started; once every lease is held, polls are counted for `--window` seconds
(from each member's load row, cluster/members.py) and the members' CPU is read from /proc:

* `meters_per_s`: polls completed per second by the whole cluster (the interval is set so
  that `--demand` polls per second are due);
* `cpu_ms_per_session`: member CPU over polls; the 1-member figure of the same run is the
  baseline (goal: 2 members within 1.15x of it).

Then, with the largest cluster still running, one member is SIGKILLed: `takeover_s` is the time
until every lease it held is held by another member (goal <= lease_s + one polling interval),
`takeover_polled_s` until every one of its meters has been polled again. Finally the
simulator's `stats` op gives `max_concurrent_sessions` over the fleet (must be 1).

    python -m benchmarks cluster --meters 10000 --members 1,2 --json"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks._common import (
    emit,
    goal,
    machine_busy_s,
    others_cpu_percent,
    parser,
    ratio,
    rounded,
)
from benchmarks._proc import Child, sim_fleet, spawn
from benchmarks.relay_latency import database, import_fleet

BROKER = ("127.0.0.1", 1883)
CPU_RATIO_GOAL = 1.15


def write_config(path: Path, db_url: str, prefix: str, args: Any) -> None:
    interval = max(args.meters / args.demand, 1.0)
    path.write_text(
        f'[database]\nurl = "{db_url}"\n\n'
        f'[mqtt]\nhost = "{BROKER[0]}"\nport = {BROKER[1]}\nclient_id = "{prefix}-he"\n'
        f'billing_prefix = "{prefix}/billing"\nheadend_prefix = "{prefix}/headend"\n'
        f'share_group = "{prefix}"\n\n'
        f"[polling]\ninterval_s = {interval}\nconcurrency = {args.concurrency}\n"
        f"timeout_s = 10\nload_profile = false\nbilling_profile = false\n"
        f"clock_check_interval_s = 31536000\n\n"
        f"[cluster]\nenabled = true\nlease_s = {args.lease_s}\n\n"
        '[logging]\nlevel = "WARNING"\nformat = "json"\n'
    )


@contextlib.asynccontextmanager
async def members(
    count: int, config: Path, master_hex: str, tag: str
) -> AsyncIterator[list[tuple[str, Child]]]:
    async with contextlib.AsyncExitStack() as stack:
        started = []
        for i in range(count):
            instance = f"{tag}-{count}-m{i}"
            env = {"HEADEND_MASTER_KEY": master_hex, "HEADEND_CLUSTER_INSTANCE_ID": instance}
            argv = [str(Path(sys.executable).with_name("headend")), "run", "--config", str(config)]
            child = await stack.enter_async_context(spawn(argv, env=env))
            started.append((instance, child))
        yield started


async def _sql(engine: Any, query: str, **params: Any) -> list[Any]:
    from sqlalchemy import text

    async with engine.connect() as connection:
        return list((await connection.execute(text(query), params)).all())


async def _wait(check: Any, limit_s: float, what: str, every: float = 0.2) -> float:
    began = time.monotonic()
    while not await check():
        if time.monotonic() - began > limit_s:
            raise TimeoutError(f"{what}: not within {limit_s:.0f} s")
        await asyncio.sleep(every)
    return time.monotonic() - began


async def _all_held(engine: Any, ids: list[str]) -> bool:
    rows = await _sql(
        engine,
        "SELECT count(*) AS held, count(DISTINCT holder) AS holders FROM cluster_leases "
        "WHERE expires_at > now() AND holder = ANY(:ids)",
        ids=ids,
    )
    return bool(rows[0].held == 64 and rows[0].holders == len(ids))


async def _polls(engine: Any, ids: list[str]) -> int:
    rows = await _sql(
        engine, "SELECT load FROM cluster_members WHERE instance_id = ANY(:ids)", ids=ids
    )
    total = 0
    for row in rows:
        load = json.loads(row.load) if isinstance(row.load, str) else row.load
        total += int(load.get("polls_ok", 0)) + int(load.get("polls_failed", 0))
    return total


async def _at_least(engine: Any, ids: list[str], polls: int) -> bool:
    return await _polls(engine, ids) >= polls


async def _stats(port: int) -> dict[str, Any]:
    from simulators.control import ControlClient

    async with ControlClient(port=port, timeout=60) as client:
        result: dict[str, Any] = await client.call("stats")
    return result


async def phase(count: int, engine: Any, config: Path, master_hex: str, tag: str, args: Any) -> Any:
    async with members(count, config, master_hex, tag) as started:
        ids = [instance for instance, _ in started]
        await _wait(lambda: _all_held(engine, ids), args.start_timeout, "leases held")
        # Warm-up: every meter polled once (the first poll reads its object list, once).
        with contextlib.suppress(TimeoutError):
            await _wait(
                lambda: _at_least(engine, ids, args.meters), args.warmup, "warm-up", every=1.0
            )
        polls0 = await _polls(engine, ids)
        cpu0 = sum(child.cpu_s() for _, child in started)
        busy0, wall0 = machine_busy_s(), time.monotonic()
        await asyncio.sleep(args.window)
        polls = await _polls(engine, ids) - polls0
        cpu = sum(child.cpu_s() for _, child in started) - cpu0
        wall = time.monotonic() - wall0
        result: dict[str, Any] = {
            "members": count,
            "meters_per_s": rounded(polls / wall, 1),
            "cpu_ms_per_session": rounded(1000 * cpu / polls, 3) if polls else None,
            "members_cpu_percent": rounded(100 * cpu / wall, 1),
            "others_cpu_percent": others_cpu_percent(machine_busy_s() - busy0, cpu, wall),
            "polls": polls,
        }
        if count >= 2 and args.kill:
            result["takeover"] = await takeover(engine, started, args)
        return result


async def takeover(engine: Any, started: list[tuple[str, Child]], args: Any) -> dict[str, Any]:
    victim, child = started[-1]
    survivors = [instance for instance, _ in started[:-1]]
    theirs = [
        r.name
        for r in await _sql(
            engine,
            "SELECT name FROM cluster_leases WHERE holder = :v AND expires_at > now()",
            v=victim,
        )
    ]
    child.process.send_signal(signal.SIGKILL)
    killed = datetime.now(UTC)

    async def leases_moved() -> bool:
        rows = await _sql(
            engine,
            "SELECT count(*) AS n FROM cluster_leases WHERE name = ANY(:names) "
            "AND expires_at > now() AND holder = ANY(:ids)",
            names=theirs,
            ids=survivors,
        )
        return bool(rows[0].n == len(theirs))

    limit = 3 * args.lease_s + args.meters / args.demand + 60
    moved_s = await _wait(leases_moved, limit, "takeover")

    unpolled: list[int] = []

    async def polled_again() -> bool:
        from headend.cluster.leases import lease_name

        meters = await _sql(engine, "SELECT transport, line, last_reading_at FROM meters")
        mine = [m for m in meters if lease_name(m.transport, m.line) in set(theirs)]
        unpolled[:] = [
            len([m for m in mine if not m.last_reading_at or m.last_reading_at <= killed])
        ]
        return unpolled[0] == 0

    polled_s: float | None = None
    with contextlib.suppress(TimeoutError):  # a cluster slower than the demand lags behind
        polled_s = moved_s + await _wait(polled_again, limit, "polled again", every=1.0)
    interval = max(args.meters / args.demand, 1.0)
    return {
        "leases_taken_over": len(theirs),
        "takeover_s": rounded(moved_s, 2),
        "takeover_polled_s": rounded(polled_s, 2),
        "not_polled_again": unpolled[0] if unpolled else None,
        "goal": goal(
            rounded(moved_s, 2),
            args.lease_s + interval,
            at_least=False,
            text=f"<= lease_s + one interval ({args.lease_s + interval:g} s)",
        ),
    }


async def run(args: Any) -> dict[str, Any]:
    from sqlalchemy.ext.asyncio import create_async_engine

    counts = [int(n) for n in args.members.split(",")]
    with socket.socket() as probe:
        if probe.connect_ex(BROKER) != 0:
            return {"benchmark": "cluster", "failures": ["no Mosquitto on 127.0.0.1:1883"]}
    master_hex = secrets.token_hex(32)
    tag = f"bc{uuid.uuid4().hex[:8]}"
    result: dict[str, Any] = {
        "benchmark": "cluster",
        "meters": args.meters,
        "demand_polls_per_s": args.demand,
        "lease_s": args.lease_s,
        "window_s": args.window,
        "cpus": os.cpu_count(),
        "failures": [],
    }
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as directory:
        root = Path(directory)
        async with (
            database("postgresql", root, args.postgres_url) as db_url,
            sim_fleet(
                args.meters, start_limit_s=args.start_timeout, extra=["--control-port", "0"]
            ) as fleet,
        ):
            control = next(line for line in fleet.child.tail if line.startswith("control: "))
            control_port = int(control.rsplit(":", 1)[1])
            await import_fleet(db_url, fleet.inventory, master_hex)
            config = root / "headend.toml"
            write_config(config, db_url, tag, args)
            engine = create_async_engine(db_url)
            try:
                phases = []
                for count in counts:
                    try:
                        phases.append(await phase(count, engine, config, master_hex, tag, args))
                    except (TimeoutError, RuntimeError) as exc:
                        result["failures"].append(f"{count} member(s): {exc}")
                result["phases"] = phases
                stats = (await _stats(control_port))["meters"]
            finally:
                await engine.dispose()
    result["max_concurrent_sessions"] = max(
        (s["max_concurrent_sessions"] for s in stats.values()), default=0
    )
    result["sessions"] = sum(s["sessions"] for s in stats.values())
    if result["max_concurrent_sessions"] > 1:
        result["failures"].append("a meter had two sessions at once")
    by_count = {p["members"]: p for p in result.get("phases", [])}
    if 1 in by_count:
        base = by_count[1]["cpu_ms_per_session"]
        for count, p in by_count.items():
            if count > 1:
                p["cpu_per_session_vs_1_member"] = goal(
                    ratio(p["cpu_ms_per_session"], base),
                    CPU_RATIO_GOAL,
                    at_least=False,
                    text=f"CPU per session within {CPU_RATIO_GOAL}x of 1 member",
                )
                p["speedup_vs_1_member"] = ratio(p["meters_per_s"], by_count[1]["meters_per_s"])
    return result


def main(argv: list[str] | None = None) -> int:
    cli = parser("cluster", __doc__ or "")
    cli.add_argument("--meters", type=int, default=10_000)
    cli.add_argument("--members", default="1,2", help="member counts to run, e.g. 1,2,3")
    cli.add_argument(
        "--demand", type=float, default=1000.0, help="polls per second due (sets the interval)"
    )
    cli.add_argument("--window", type=float, default=30.0, help="seconds measured per phase")
    cli.add_argument("--lease-s", type=float, default=5.0)
    cli.add_argument(
        "--warmup", type=float, default=120.0, help="at most this long for every meter's first poll"
    )
    cli.add_argument("--concurrency", type=int, default=500)
    cli.add_argument("--no-kill", dest="kill", action="store_false", help="skip the takeover")
    cli.add_argument("--start-timeout", type=float, default=300.0)
    cli.add_argument("--postgres-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    args = cli.parse_args(argv)
    result = asyncio.run(run(args))
    emit(result, args.json)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
