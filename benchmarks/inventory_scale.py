"""B5 inventory scale: import 100,000 meters, then the daemon's RSS and CPU while idle.

1. An inventory CSV of `--meters` HLS-GMAC meters (two keys each, so every row is sealed
   under the master key) goes in with `headend.meters.inventory.import_inventory`. Floor in the same
   run: the same file read with the stdlib csv module and inserted with stdlib sqlite3,
   unchecked and unencrypted.
2. `headend run` starts on that database (polling interval of a year, so no meter is due)
   and idles for `--idle-s`: its resident set and CPU come from /proc. Baseline in the same
   run: a bare interpreter that imported the daemon's modules and sleeps.
3. The scheduler alone, in this process: one full 900 s polling round of the whole fleet
   (pop_due + finished for every meter, the sessions themselves left out), so its cost per
   poll is known for the realistic interval too. Floor: heappush/heappop of as many entries.

    python -m benchmarks inventory-scale --meters 100000 --json"""

from __future__ import annotations

import asyncio
import csv
import heapq
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks._common import (
    emit,
    exit_code,
    goal,
    measure,
    parser,
    ratio,
    rounded,
)
from benchmarks._proc import spawn
from drivers.inventory_columns import REQUIRED_COLUMNS

RSS_GOAL_MB = 1024.0
YEAR_S = 365 * 86400
_BASELINE_IMPORTS = (
    "import headend.daemon, headend.cli, headend.meters.inventory, drivers.session, drivers.connect"
)


def write_inventory(path: Path, meters: int) -> None:
    """Meter i on 127.x.y.z:4059 (all of 127/8 is loopback: a unique line per meter, and a
    poll that does start is refused at once instead of hanging). Only the required columns."""
    with open(path, "w", newline="", encoding="ascii") as handle:
        writer = csv.DictWriter(handle, fieldnames=REQUIRED_COLUMNS)
        writer.writeheader()
        for i in range(meters):
            key = f"{i:032x}"
            writer.writerow(
                {
                    "meter_id": f"B5M{i:08d}",
                    "host": f"127.{1 + (i >> 16)}.{(i >> 8) & 0xFF}.{i & 0xFF}",
                    "port": 4059,
                    "transport": "wrapper",
                    "client_sap": 1,
                    "server_logical": 1,
                    "security": "hls-gmac",
                    "auth_key": key,
                    "enc_key": key[::-1],
                }
            )


async def import_meters(db_path: Path, csv_path: Path, master_hex: str) -> dict[str, Any]:
    from headend.meters.inventory import import_inventory
    from headend.meters.secrets import parse_master_key
    from headend.storage import Database

    db = await Database.open(f"sqlite+aiosqlite:///{db_path}")
    try:
        with measure() as span:
            result = await import_inventory(db, csv_path, parse_master_key(master_hex, "bench"))
    finally:
        await db.dispose()
    return {"added": result.added, "wall_s": span.wall_s, "cpu_s": span.cpu_s}


def raw_import(db_path: Path, csv_path: Path) -> dict[str, Any]:
    """The floor: stdlib csv + sqlite3 into the same table, no checks, no sealing."""
    now = "2026-01-01 00:00:00.000000"
    with measure() as span:
        with open(csv_path, newline="", encoding="ascii") as handle:
            rows = [
                (
                    r["meter_id"],
                    r["host"],
                    int(r["port"]),
                    r["transport"],
                    int(r["client_sap"]),
                    int(r["server_logical"]),
                    r["security"],
                    r["auth_key"],
                    r["enc_key"],
                    f"tcp:{r['host']}:{r['port']}",
                    now,
                    now,
                )
                for r in csv.DictReader(handle)
            ]
        connection = sqlite3.connect(db_path, isolation_level=None)
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(
                "INSERT INTO meters (meter_id, host, port, transport, client_sap, "
                "server_logical, security, auth_key_enc, enc_key_enc, line, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            connection.execute("COMMIT")
        finally:
            connection.close()
    return {"added": len(rows), "wall_s": span.wall_s, "cpu_s": span.cpu_s}


def _broker_reachable(host: str = "127.0.0.1", port: int = 1883) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(path: Path, db_path: Path) -> str:
    """A daemon config for idling: nothing due for a year. Returns which broker it uses."""
    if _broker_reachable():
        mqtt = 'host = "127.0.0.1"\nport = 1883\n'
        broker = "mosquitto 127.0.0.1:1883"
    else:
        port = _free_port()
        mqtt = f"port = {port}\n"
        broker = f"embedded 127.0.0.1:{port}"
    path.write_text(
        f'[database]\nurl = "sqlite+aiosqlite:///{db_path}"\n\n'
        f'[mqtt]\n{mqtt}client_id = "bench-b5-{uuid.uuid4().hex[:8]}"\n'
        f'headend_prefix = "bench-b5-{uuid.uuid4().hex[:8]}"\n\n'
        f"[polling]\ninterval_s = {YEAR_S}\nprofile_interval_s = {YEAR_S}\n"
        f"clock_check_interval_s = {YEAR_S}\n\n"
        '[logging]\nlevel = "INFO"\nformat = "json"\n'
    )
    return broker


_DAEMON_FALLBACK = """
import asyncio, sys
from pathlib import Path
from headend.config import load_config
from headend.daemon import configure_daemon_logging, run_daemon
config = load_config(Path(sys.argv[1]))
configure_daemon_logging(config.logging)
asyncio.run(run_daemon(config))
"""


def daemon_command(config: Path) -> list[str]:
    """`headend run --config FILE`; while the CLI lacks `run`, the same daemon via -c."""
    script = Path(sys.executable).with_name("headend")
    if script.exists():
        probe = subprocess.run(
            [str(script), "run", "--help"], capture_output=True, timeout=60, check=False
        )
        if probe.returncode == 0:
            return [str(script), "run", "--config", str(config)]
    return [sys.executable, "-c", _DAEMON_FALLBACK, str(config)]


async def _idle_window(child: Any, idle_s: float) -> dict[str, Any]:
    """Let start-up settle (RSS steady), then CPU and RSS over `idle_s`."""
    previous = -1.0
    for _ in range(60):
        await asyncio.sleep(0.5)
        rss, _peak = child.rss_mb()
        if previous > 0 and abs(rss - previous) <= max(1.0, previous * 0.005):
            break
        previous = rss
    cpu0, wall0 = child.cpu_s(), time.monotonic()
    await asyncio.sleep(idle_s)
    cpu1, wall1 = child.cpu_s(), time.monotonic()
    rss, peak = child.rss_mb()
    return {
        "rss_mb": rss,
        "peak_rss_mb": peak,
        "idle_cpu_percent": rounded((cpu1 - cpu0) / (wall1 - wall0) * 100, 3),
        "idle_window_s": rounded(wall1 - wall0, 1),
    }


async def baseline_process(idle_s: float) -> dict[str, Any]:
    argv = [
        sys.executable,
        "-c",
        f"{_BASELINE_IMPORTS}; import time; print('ready', flush=True); time.sleep(86400)",
    ]
    async with spawn(argv) as child:
        await child.wait_for(lambda line: line == "ready", 120)
        return await _idle_window(child, idle_s)


async def daemon_process(
    config: Path, master_hex: str, idle_s: float, start_limit_s: float
) -> dict[str, Any]:
    argv = daemon_command(config)
    began = time.monotonic()
    async with spawn(argv, env={"HEADEND_MASTER_KEY": master_hex}) as child:
        line = await child.wait_for(lambda text: "head-end running" in text, start_limit_s)
        ready_s = time.monotonic() - began
        figures = await _idle_window(child, idle_s)
        figures["start_s"] = rounded(ready_s, 2)
        figures["ready_line"] = line[:200]
        figures["command"] = "headend run" if argv[1] == "run" else "run_daemon (python -c)"
        code = await child.stop()
        figures["exit_code"] = code
    return figures


def scheduler_round(meter_ids: list[str], interval_s: float) -> dict[str, Any]:
    """One full polling round of every meter through the Scheduler (sessions left out)."""
    from headend.collection.scheduler import Scheduler

    scheduler = Scheduler(interval_s=interval_s)
    with measure() as add_span:
        for meter_id in meter_ids:
            scheduler.add(meter_id, 0.0)
    polls = 0
    with measure() as round_span:
        now = 0.0
        while polls < len(meter_ids):
            now += 1.0
            for job in scheduler.pop_due(now, 1000):
                scheduler.finished(job, now, ok=True)
                polls += 1
    # Floor: as many heap pushes and pops of (time, generation, id).
    heap: list[tuple[float, int, str]] = []
    with measure() as floor_span:
        for index, meter_id in enumerate(meter_ids):
            heapq.heappush(heap, (float(index), 0, meter_id))
        for _ in range(len(meter_ids)):
            due, generation, meter_id = heapq.heappop(heap)
            heapq.heappush(heap, (due + interval_s, generation + 1, meter_id))
    cpu_per_poll = round_span.cpu_s / max(polls, 1)
    floor_per_poll = floor_span.cpu_s / max(len(meter_ids), 1)
    return {
        "polls": polls,
        "add_all_cpu_s": rounded(add_span.cpu_s, 3),
        "cpu_us_per_poll": rounded(cpu_per_poll * 1e6, 2),
        "floor_heap_cpu_us_per_poll": rounded(floor_per_poll * 1e6, 2),
        "ratio_to_floor": ratio(cpu_per_poll, floor_per_poll),
        # At the default 900 s interval the whole fleet is polled once per interval.
        "cpu_percent_at_900s_interval": rounded(
            cpu_per_poll * len(meter_ids) / interval_s * 100, 4
        ),
    }


async def run(meters: int, idle_s: float, start_limit_s: float, daemon: bool) -> dict[str, Any]:
    master_hex = os.urandom(32).hex()
    result: dict[str, Any] = {"benchmark": "inventory-scale", "meters": meters}
    failures = 0
    with tempfile.TemporaryDirectory(prefix="bench-b5-") as directory:
        root = Path(directory)
        csv_path = root / "inventory.csv"
        write_inventory(csv_path, meters)
        from headend.storage import migrate

        db_path, raw_path = root / "headend.db", root / "raw.db"
        await migrate(f"sqlite+aiosqlite:///{raw_path}")
        imported = await import_meters(db_path, csv_path, master_hex)
        floor = await asyncio.to_thread(raw_import, raw_path, csv_path)
        failures += meters - imported["added"]
        result["import"] = {
            "meters_per_s": rounded(meters / imported["wall_s"], 0),
            "wall_s": rounded(imported["wall_s"], 2),
            "cpu_s": rounded(imported["cpu_s"], 2),
            "floor_csv_sqlite3_meters_per_s": rounded(meters / floor["wall_s"], 0),
            "ratio_to_floor": ratio(imported["wall_s"], floor["wall_s"]),
        }
        result["scheduler"] = scheduler_round([f"B5M{i:08d}" for i in range(meters)], 900.0)
        if daemon:
            config = root / "headend.toml"
            broker = write_config(config, db_path)
            baseline = await baseline_process(idle_s)
            try:
                figures = await daemon_process(config, master_hex, idle_s, start_limit_s)
            except (RuntimeError, TimeoutError) as exc:
                figures = {"error": str(exc)[-2000:]}
                failures += 1
            figures["broker"] = broker
            result["daemon"] = figures
            result["baseline_bare_interpreter"] = baseline
            rss = figures.get("rss_mb")
            if rss is not None:
                result["daemon"]["rss_over_baseline_mb"] = rounded(rss - baseline["rss_mb"], 1)
                result["daemon"]["kb_per_meter"] = rounded(
                    (rss - baseline["rss_mb"]) * 1024 / meters, 2
                )
                result["daemon"]["ratio_rss_to_baseline"] = ratio(rss, baseline["rss_mb"])
            result["goal"] = goal(
                figures.get("peak_rss_mb"),
                RSS_GOAL_MB,
                at_least=False,
                text=f"daemon RSS < {RSS_GOAL_MB:.0f} MB with {meters:,} meters",
            )
    result["failures"] = failures
    return result


def main(argv: list[str] | None = None) -> int:
    cli = parser("inventory-scale", __doc__ or "")
    cli.add_argument("--meters", type=int, default=100_000)
    cli.add_argument(
        "--idle-s", type=float, default=65.0, help="idle window (one inventory refresh: 60 s)"
    )
    cli.add_argument("--timeout", type=float, default=600.0, help="daemon start-up limit")
    cli.add_argument("--no-daemon", action="store_true", help="import and scheduler only")
    args = cli.parse_args(argv)
    result = asyncio.run(run(args.meters, args.idle_s, args.timeout, not args.no_daemon))
    emit(result, args.json)
    return exit_code(result)


if __name__ == "__main__":
    raise SystemExit(main())
