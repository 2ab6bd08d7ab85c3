"""Soak: the daemon polling a `dlms-sim` fleet for an hour (or as long as asked), with balance
events and relay commands mixed in, sampled every minute for what grows.

Every `--sample-s` the daemon's RSS, open files (/proc/PID/fd), CPU per poll (daemon CPU over
the minute / polls stored in it) and outbox depth are recorded, with the readings count and,
as the same run's baseline for index growth, the CPU this process spends on a raw batched
insert of 1000 rows into the same readings table (SQLite). The report gives the slope (least
squares, per minute) of each after `--warmup-min`, and over the last 30 minutes when the run
is that long; CPU per poll is compared with the first steady 10 minutes, beside the same ratio
of the raw insert.

Balance events: every `--event-every-s` one event for the next meter in turn, its balance
alternating below and above zero per meter, so relays go off and on through the run.

`--census`: every sample also counts the daemon's live objects by type (gc.get_objects(), from
a thread; cheap) and the report lists the types that grew since warm-up. `--tracemalloc`: the
daemon runs under tracemalloc (benchmarks/_traced_daemon.py) and the report lists what grew
by source line; tracing is heavy (its RSS and CPU figures are not the daemon's own).

    python -m benchmarks soak --meters 2000 --interval-s 10 --minutes 60 --json"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks._common import emit, machine_busy_s, parser, raise_fd_limit, rounded
from benchmarks._proc import sim_fleet, spawn
from benchmarks.relay_latency import BROKER, _broker_up, daemon_argv, import_fleet

GOAL_RSS_SLOPE_MB_PER_MIN = 0.1
GOAL_CPU_RATIO = 1.1
PROBE_OBIS = "0.0.99.99.99.255"


def open_files(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def proc_status(pid: int) -> dict[str, float]:
    """Threads (one per open aiosqlite connection, beside the loop's own) and anonymous
    memory (MB) of a process, from /proc (Linux)."""
    out = {"threads": -1.0, "anon_mb": -1.0}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key == "Threads":
                out["threads"] = float(rest.split()[0])
            elif key == "RssAnon":
                out["anon_mb"] = round(int(rest.split()[0]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return out


def slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (minute, value) points."""
    if len(points) < 3:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    den = sum((x - mean_x) ** 2 for x, _ in points)
    if den == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / den


def write_config(path: Path, db_url: str, prefix: str, args: Any) -> None:
    path.write_text(
        f'[database]\nurl = "{db_url}"\n\n'
        f'[mqtt]\nhost = "{BROKER[0]}"\nport = {BROKER[1]}\nclient_id = "{prefix}-headend"\n'
        f'billing_prefix = "{prefix}/billing"\nheadend_prefix = "{prefix}/headend"\n\n'
        f"[polling]\ninterval_s = {args.interval_s}\nconcurrency = {args.concurrency}\n"
        f"timeout_s = 10\nload_profile = false\nbilling_profile = false\n"
        f"clock_check_interval_s = 31536000\n\n"
        '[logging]\nlevel = "INFO"\nformat = "json"\n'
    )


class Probe:
    """The database side, read from this process with the stdlib sqlite3 module."""

    def __init__(self, path: Path) -> None:
        self.connection = sqlite3.connect(
            path, timeout=30, isolation_level=None, check_same_thread=False
        )
        self.connection.execute("PRAGMA busy_timeout = 30000")
        self._next_ts = 0

    def counts(self) -> tuple[int, int]:
        readings = self.connection.execute("SELECT count(*) FROM readings").fetchone()[0]
        outbox = self.connection.execute("SELECT count(*) FROM outbox").fetchone()[0]
        return int(readings), int(outbox)

    def raw_insert_cpu_ms(self, meter_id: str, rows: int = 1000) -> float | None:
        """CPU of one batched insert of `rows` readings into the same table, for the meter's
        key and a register of its own (the index-growth baseline; storage/readings.py
        stores rows the same way: integer keys, the time in epoch microseconds)."""
        self.connection.execute(
            "INSERT OR IGNORE INTO registers (obis, unit) VALUES (?, '')", (PROBE_OBIS,)
        )
        register = self.connection.execute(
            "SELECT id FROM registers WHERE obis = ? AND unit = ''", (PROBE_OBIS,)
        ).fetchone()[0]
        key = self.connection.execute(
            "SELECT id FROM meter_keys WHERE meter_id = ?", (meter_id,)
        ).fetchone()
        if key is None:  # not read yet: no key for its readings either
            return None
        values = []
        for _ in range(rows):
            self._next_ts += 1
            values.append((key[0], register, 946_684_800_000_000 + self._next_ts, 1.0))
        began = time.process_time()
        self.connection.execute("BEGIN IMMEDIATE")
        self.connection.executemany(
            "INSERT INTO readings (meter_key, register_id, ts, value_num) VALUES (?, ?, ?, ?)",
            values,
        )
        self.connection.execute("COMMIT")
        return (time.process_time() - began) * 1000

    def close(self) -> None:
        self.connection.close()


async def billing_feed(prefix: str, meter_ids: list[str], every_s: float) -> dict[str, int]:
    """One balance event every `every_s`, meters in turn, balance sign alternating per meter."""
    import aiomqtt

    sent = {"events": 0, "errors": 0}
    seq: dict[str, int] = {}
    index = 0
    while True:
        try:
            async with aiomqtt.Client(*BROKER, identifier=f"{prefix}-billing") as client:
                while True:
                    meter_id = meter_ids[index % len(meter_ids)]
                    index += 1
                    seq[meter_id] = seq.get(meter_id, 0) + 1
                    body = {
                        "meter_id": meter_id,
                        "balance": "-5.00" if seq[meter_id] % 2 else "30.00",
                        "currency": "CNY",
                        "seq": seq[meter_id],
                        "event_id": uuid.uuid4().hex,
                        "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    }
                    topic = f"{prefix}/billing/balance/{meter_id}"
                    await client.publish(topic, json.dumps(body), qos=1, timeout=10)
                    sent["events"] += 1
                    await asyncio.sleep(every_s)
        except asyncio.CancelledError:
            return sent
        except Exception:
            sent["errors"] += 1
            await asyncio.sleep(1.0)


def summarize(samples: list[dict[str, Any]], warmup_min: float) -> dict[str, Any]:
    steady = [s for s in samples if s["minute"] >= warmup_min]
    last30 = [s for s in steady if s["minute"] >= samples[-1]["minute"] - 30] if samples else []

    def fit(rows: list[dict[str, Any]], key: str) -> float | None:
        return rounded(slope([(s["minute"], s[key]) for s in rows if s.get(key) is not None]), 4)

    out: dict[str, Any] = {
        "steady_samples": len(steady),
        "rss_slope_mb_per_min": fit(steady, "rss_mb"),
        "rss_slope_last30_mb_per_min": fit(last30, "rss_mb"),
        "anon_slope_mb_per_min": fit(steady, "anon_mb"),
        "rss_slope_second_half_mb_per_min": fit(steady[len(steady) // 2 :], "rss_mb"),
        "open_files_slope_per_min": fit(steady, "open_files"),
        "outbox_depth_slope_per_min": fit(steady, "outbox_depth"),
        "cpu_ms_per_poll_slope_per_min": fit(steady, "cpu_ms_per_poll"),
    }
    first10 = [s for s in steady if s["minute"] < warmup_min + 10]
    tail = steady[-max(1, len(first10)) :] if steady else []

    def mean(rows: list[dict[str, Any]], key: str) -> float | None:
        values = [s[key] for s in rows if s[key] is not None]
        return sum(values) / len(values) if values else None

    cpu_first, cpu_last = mean(first10, "cpu_ms_per_poll"), mean(tail, "cpu_ms_per_poll")
    raw_first, raw_last = mean(first10, "raw_insert_cpu_ms"), mean(tail, "raw_insert_cpu_ms")
    out["cpu_ms_per_poll_first_steady"] = rounded(cpu_first, 3)
    out["cpu_ms_per_poll_last"] = rounded(cpu_last, 3)
    out["cpu_per_poll_ratio"] = rounded(cpu_last / cpu_first, 3) if cpu_first and cpu_last else None
    out["raw_insert_ratio"] = rounded(raw_last / raw_first, 3) if raw_first and raw_last else None
    return out


async def run(args: Any) -> dict[str, Any]:
    if not _broker_up():
        return {"benchmark": "soak", "skipped": "no MQTT broker on 127.0.0.1:1883", "failures": 0}
    fds = raise_fd_limit(args.concurrency + 200)
    prefix = f"bench-soak-{uuid.uuid4().hex[:8]}"
    master_hex = os.urandom(32).hex()
    result: dict[str, Any] = {
        "benchmark": "soak",
        "meters": args.meters,
        "interval_s": args.interval_s,
        "minutes": args.minutes,
        "polls_per_s_demanded": rounded(args.meters / args.interval_s, 1),
        "tracemalloc": args.tracemalloc,
        "census": args.census,
        "fd_limit": fds,
    }
    samples: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as directory:
        root = Path(directory)
        db_path = root / "headend.db"
        db_url = f"sqlite+aiosqlite:///{db_path}"
        config = root / "headend.toml"
        trace_file = root / "trace.jsonl"
        async with sim_fleet(args.meters, latency_ms=args.latency_ms) as fleet:
            await import_fleet(db_url, fleet.inventory, master_hex)
            write_config(config, db_url, prefix, args)
            env = {"HEADEND_MASTER_KEY": master_hex}
            argv = daemon_argv(config)
            if args.tracemalloc or args.census:
                argv = [sys.executable, "-m", "benchmarks._traced_daemon", *argv[1:]]
                env.update(
                    SOAK_TRACE_MODE="census" if args.census else "tracemalloc",
                    SOAK_TRACE_FILE=str(trace_file),
                    SOAK_TRACE_EVERY_S=str(args.sample_s),
                    SOAK_TRACE_WARMUP_S=str(args.warmup_min * 60),
                )
            meter_ids = [row["meter_id"] for row in fleet.rows]
            probe = Probe(db_path)
            async with spawn(argv, env=env) as daemon:
                await daemon.wait_for(lambda t: "head-end running" in t, args.start_timeout)
                feed = asyncio.create_task(
                    billing_feed(prefix, meter_ids[: max(1, len(meter_ids) // 10)], args.event_s)
                )
                began = time.monotonic()
                cpu0 = daemon.cpu_s()
                readings0, _ = await asyncio.to_thread(probe.counts)
                busy0 = machine_busy_s()
                minute = 0
                while time.monotonic() - began < args.minutes * 60:
                    await asyncio.sleep(args.sample_s)
                    minute += 1
                    if daemon.process.returncode is not None:
                        result["daemon_exit"] = daemon.process.returncode
                        result["daemon_log_tail"] = list(daemon.tail)[-10:]
                        break
                    cpu1 = daemon.cpu_s()
                    readings1, depth = await asyncio.to_thread(probe.counts)
                    raw_ms = await asyncio.to_thread(probe.raw_insert_cpu_ms, meter_ids[0])
                    polls = (readings1 - readings0) / max(1, args.registers)
                    busy1 = machine_busy_s()
                    samples.append(
                        {
                            "minute": round((time.monotonic() - began) / 60, 2),
                            "rss_mb": daemon.rss_mb()[0],
                            "open_files": open_files(daemon.pid),
                            **proc_status(daemon.pid),
                            "polls": round(polls),
                            "cpu_ms_per_poll": rounded((cpu1 - cpu0) * 1000 / polls, 3)
                            if polls > 0
                            else None,
                            "outbox_depth": depth,
                            "readings": readings1,
                            "raw_insert_cpu_ms": rounded(raw_ms, 2),
                            "machine_busy_cores": rounded((busy1 - busy0) / args.sample_s, 2),
                        }
                    )
                    if not args.json:
                        print(json.dumps(samples[-1]), file=sys.stderr, flush=True)
                    cpu0, readings0, busy0 = cpu1, readings1 + 1000, busy1
                feed.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    fed = await feed
                result["balance_events_sent"] = fed["events"] if isinstance(fed, dict) else None
            probe.close()
        lines = trace_file.read_text().splitlines() if trace_file.exists() else []
        if args.census and lines:
            result["census_objects"] = [json.loads(x)["objects"] for x in lines]
            result["census_top_growth"] = json.loads(lines[-1])["since_warmup_by_type"][:10]
        elif lines:
            last = json.loads(lines[-1])
            result["tracemalloc_traced_mb"] = [json.loads(x)["traced_mb"] for x in lines]
            result["tracemalloc_top_since_warmup"] = last["since_warmup_by_line"][:10]
            result["tracemalloc_top_chains"] = last["since_warmup_by_chain"][:5]
    result["samples"] = samples
    result.update(summarize(samples, args.warmup_min))
    result["goal"] = {
        "rss_slope_under_mb_per_min": GOAL_RSS_SLOPE_MB_PER_MIN,
        "cpu_per_poll_ratio_under": GOAL_CPU_RATIO,
    }
    result["failures"] = 0 if samples else 1
    return result


def main(argv: list[str] | None = None) -> int:
    cli = parser("soak", __doc__ or "")
    cli.add_argument("--meters", type=int, default=2000)
    cli.add_argument("--interval-s", type=float, default=10.0, help="polling.interval_s")
    cli.add_argument("--minutes", type=float, default=60.0)
    cli.add_argument("--sample-s", type=float, default=60.0, help="seconds between samples")
    cli.add_argument("--warmup-min", type=float, default=5.0, help="left out of the slopes")
    cli.add_argument("--event-s", type=float, default=2.0, help="seconds between events")
    cli.add_argument("--latency-ms", type=float, default=0.0, help="simulated answer delay")
    cli.add_argument("--concurrency", type=int, default=1000)
    cli.add_argument("--registers", type=int, default=4, help="readings stored per poll")
    cli.add_argument("--tracemalloc", action="store_true", help="trace the daemon's memory")
    cli.add_argument("--census", action="store_true", help="count the daemon's live objects")
    cli.add_argument("--start-timeout", type=float, default=600.0)
    args = cli.parse_args(argv)
    result = asyncio.run(run(args))
    emit(result, args.json)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
