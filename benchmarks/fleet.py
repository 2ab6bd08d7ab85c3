"""B1 fleet poll: every meter of a `dlms-sim` fleet polled once (associate, read 4 registers,
release) by the head-end's asyncio client, beside dlms-cosem's blocking client in a thread pool
on the same fleet and the CPU floor of the session's bytes, all in one run.

The fleet runs in its own process (`python -m simulators --latency-ms L`), so this process's
CPU (time.process_time) is the head-end client's alone; the simulator's is read from /proc.
- ours: DlmsSession via drivers.connect.open_session, `--concurrency` sessions in flight,
  `session.read(4 OBIS codes)` (values with scaler and unit);
- baseline: dlms_cosem.clients.dlms_client.DlmsClient (blocking TCP) in a
  ThreadPoolExecutor(`--baseline-threads`), the same GET requests our session sent;
- floor: our sans-IO ClientConnection + wrapper framing through the recorded session with
  the meter's recorded replies (benchmarks/_replay.py): encoding and decoding alone.

    python -m benchmarks fleet --meters 10000 --latency-ms 100 --json"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks._common import (
    OBIS_REGISTERS,
    cpu_per_call,
    emit,
    goal,
    machine_busy_s,
    others_cpu_percent,
    parser,
    percentile,
    raise_fd_limit,
    ratio,
    rounded,
    run_async,
)
from benchmarks._io_floor import poll_io_floor
from benchmarks._proc import SimFleet, connection_kwargs, sim_fleet
from benchmarks._replay import CoreReplay, Recording, plan, record

GOAL_METERS_PER_S = 1000.0
GOAL_BASELINE_RATIO = 10.0
GOAL_FLOOR_RATIO = 2.0
GOAL_IO_FLOOR_RATIO = 1.5
FD_MARGIN = 200


# -- process memory -----------------------------------------------------------------------------
def reset_peak_rss() -> bool:
    """Start a new peak-RSS window (Linux: writing 5 to clear_refs resets VmHWM)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# -- our client -----------------------------------------------------------------------------------
async def read_registers(session: Any) -> dict[str, Any]:
    readings: dict[str, Any] = await session.read(OBIS_REGISTERS)
    if len(readings) != len(OBIS_REGISTERS):
        raise RuntimeError(f"{len(readings)} of {len(OBIS_REGISTERS)} registers read")
    return readings


async def poll_ours(
    rows: Sequence[dict[str, str]],
    *,
    concurrency: int,
    request_timeout: float,
    ic_store: Any,
) -> dict[str, Any]:
    """Poll every row once, `concurrency` sessions in flight."""
    from drivers.connect import MeterConnection, open_session

    connections = [MeterConnection(**connection_kwargs(row)) for row in rows]
    durations: list[float] = []
    errors: dict[str, int] = {}
    queue = iter(connections)

    async def worker() -> None:
        for connection in queue:
            began = time.perf_counter()
            try:
                async with open_session(
                    connection, timeout=request_timeout, ic_store=ic_store
                ) as session:
                    await read_registers(session)
            except Exception as exc:
                name = type(exc).__name__
                errors[name] = errors.get(name, 0) + 1
                continue
            durations.append(time.perf_counter() - began)

    cpu0, wall0 = time.process_time(), time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, len(connections))):
            group.create_task(worker())
    return {
        "sessions": len(durations),
        "failures": sum(errors.values()),
        "errors": errors,
        "wall_s": time.perf_counter() - wall0,
        "cpu_s": time.process_time() - cpu0,
        "durations": durations,
    }


# -- the dlms-cosem baseline --------------------------------------------------------------------
def _baseline_requests(recording: Recording) -> list[list[tuple[int, str, int]]]:
    """The GET requests our session sent, as (class, obis, attribute) groups."""
    groups = []
    for step in plan(recording):
        if step.kind == "get":
            groups.append([(d.class_id, str(d.obis), d.attribute) for d, _access in step.items])
    return groups


def _baseline_session(
    row: dict[str, str], groups: list[list[tuple[int, str, int]]], ic: int
) -> float:
    from dlms_cosem import cosem, enumerations
    from dlms_cosem.clients.dlms_client import DlmsClient

    kwargs: dict[str, Any] = {
        "host": row["host"],
        "port": int(row["port"]),
        "client_logical_address": int(row["client_sap"]),
        "server_logical_address": int(row["server_logical"]),
        "timeout": 30,
    }
    if row["security"] == "hls-gmac":
        kwargs.update(
            authentication_method=enumerations.AuthenticationMechanism.HLS_GMAC,
            encryption_key=bytes.fromhex(row["enc_key"]),
            authentication_key=bytes.fromhex(row["auth_key"]),
            client_system_title=b"DLMSCOSM",
            security_suite=0,
            client_initial_invocation_counter=ic,
        )
    elif row["security"] == "lls":
        kwargs.update(
            authentication_method=enumerations.AuthenticationMechanism.LLS,
            password=row["password"].encode(),
        )

    def attribute(class_id: int, obis: str, attr: int) -> Any:
        return cosem.CosemAttribute(
            enumerations.CosemInterface(class_id), cosem.Obis.from_string(obis), attr
        )

    began = time.perf_counter()
    client = DlmsClient.with_tcp_transport(**kwargs)
    with client.session():
        for group in groups:
            if len(group) == 1:
                client.get(attribute(*group[0]))
            else:
                client.get_many(
                    [cosem.CosemAttributeWithSelection(attribute(*item), None) for item in group]
                )
    return time.perf_counter() - began


async def poll_baseline(
    rows: Sequence[dict[str, str]],
    groups: list[list[tuple[int, str, int]]],
    *,
    threads: int,
    ic_base: int,
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    durations: list[float] = []
    errors: dict[str, int] = {}
    cpu0, wall0 = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        futures = [
            loop.run_in_executor(pool, _baseline_session, row, groups, ic_base) for row in rows
        ]
        for outcome in await asyncio.gather(*futures, return_exceptions=True):
            if isinstance(outcome, BaseException):
                name = type(outcome).__name__
                errors[name] = errors.get(name, 0) + 1
            else:
                durations.append(outcome)
    return {
        "sessions": len(durations),
        "failures": sum(errors.values()),
        "errors": errors,
        "wall_s": time.perf_counter() - wall0,
        "cpu_s": time.process_time() - cpu0,
        "durations": durations,
    }


# -- one fleet, one security --------------------------------------------------------------------
def summarise(run: dict[str, Any]) -> dict[str, Any]:
    done = max(run["sessions"], 1)
    return {
        "sessions": run["sessions"],
        "failures": run["failures"],
        "errors": run["errors"],
        "meters_per_s": rounded(run["sessions"] / run["wall_s"], 1),
        "wall_s": rounded(run["wall_s"], 2),
        "cpu_ms_per_session": rounded(run["cpu_s"] / done * 1000, 3),
        "p50_session_s": rounded(percentile(run["durations"], 50), 3),
        "p99_session_s": rounded(percentile(run["durations"], 99), 3),
        "max_session_s": rounded(max(run["durations"], default=0.0), 3),
    }


async def measure_fleet(
    fleet: SimFleet,
    *,
    concurrency: int,
    request_timeout: float,
    baseline_meters: int,
    baseline_threads: int,
    floor_s: float | None = None,
) -> dict[str, Any]:
    """Record + floor on meter 0, then ours on every meter, then the baseline on a share."""
    from drivers.connect import MeterConnection
    from drivers.session import MemoryInvocationCounterStore

    # One store for every session of this run: counters only ever grow, per meter too.
    ic_store = MemoryInvocationCounterStore(start=1)
    first = MeterConnection(**connection_kwargs(fleet.rows[0]))
    recording = await record(first, read_registers, ic_store=ic_store)
    replay = CoreReplay(recording)
    if floor_s is None:
        floor_s = cpu_per_call(replay, min_s=0.5)

    sim_cpu0, busy0 = fleet.child.cpu_s(), machine_busy_s()
    reset_peak_rss()
    ours = await poll_ours(
        fleet.rows, concurrency=concurrency, request_timeout=request_timeout, ic_store=ic_store
    )
    ours_peak = peak_rss_mb()
    sim_cpu = fleet.child.cpu_s() - sim_cpu0
    busy = machine_busy_s() - busy0

    result = summarise(ours)
    result["peak_rss_mb"] = ours_peak
    result["floor_cpu_ms_per_session"] = rounded(floor_s * 1000, 3)
    result["ratio_cpu_to_floor"] = ratio(result["cpu_ms_per_session"], floor_s * 1000)
    result["round_trips_per_session"] = len(recording.pairs)
    result["bytes_per_session"] = recording.bytes_exchanged
    result["simulator_cpu_percent"] = rounded(sim_cpu / ours["wall_s"] * 100, 1)
    result["client_cpu_percent"] = rounded(ours["cpu_s"] / ours["wall_s"] * 100, 1)
    result["others_cpu_percent"] = others_cpu_percent(busy, ours["cpu_s"] + sim_cpu, ours["wall_s"])
    result["simulator_start_s"] = rounded(fleet.start_s, 2)

    # The same round trips by a bare asyncio Protocol: same loop, fleet and concurrency.
    if fleet.rows[0]["transport"] == "wrapper":
        io_floor = await poll_io_floor(
            recording, fleet.rows, concurrency=concurrency, request_timeout=request_timeout
        )
        io_ms = io_floor["cpu_s"] / max(io_floor["sessions"], 1) * 1000
        result["io_floor_cpu_ms_per_session"] = rounded(io_ms, 3)
        result["ratio_cpu_to_io_floor"] = ratio(result["cpu_ms_per_session"], io_ms)
        result["io_floor_meters_per_s"] = rounded(io_floor["sessions"] / io_floor["wall_s"], 1)
        result["io_floor_failures"] = io_floor["failures"]
        result["io_floor_errors"] = io_floor["errors"]

    if baseline_meters > 0:
        groups = _baseline_requests(recording)
        ic_base = await ic_store.reserve(1) + 1_000
        rows = fleet.rows[:baseline_meters]
        logging.getLogger("dlms_cosem").setLevel(logging.ERROR)
        base = await poll_baseline(rows, groups, threads=baseline_threads, ic_base=ic_base)
        result["baseline"] = summarise(base)
        result["baseline"]["client"] = (
            f"dlms-cosem 21.3.2 DlmsClient, blocking TCP, ThreadPoolExecutor({baseline_threads})"
        )
    return result


def headline(security: str, figures: dict[str, Any], meters: int) -> dict[str, Any]:
    base = figures.get("baseline", {})
    failures = figures["failures"] + base.get("failures", 0)
    return {
        "meters": meters,
        "security": security,
        "meters_per_s": figures["meters_per_s"],
        "baseline_meters_per_s": base.get("meters_per_s"),
        "ratio": ratio(figures["meters_per_s"], base.get("meters_per_s")),
        "client_cpu_ms_per_session": figures["cpu_ms_per_session"],
        "floor_cpu_ms_per_session": figures["floor_cpu_ms_per_session"],
        "ratio_cpu_to_floor": figures["ratio_cpu_to_floor"],
        "io_floor_cpu_ms_per_session": figures.get("io_floor_cpu_ms_per_session"),
        "ratio_cpu_to_io_floor": figures.get("ratio_cpu_to_io_floor"),
        "p50_session_s": figures["p50_session_s"],
        "p99_session_s": figures["p99_session_s"],
        "peak_rss_mb": figures["peak_rss_mb"],
        "failures": failures,
    }


def goals(security: str, top: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        goal(
            top["meters_per_s"],
            GOAL_METERS_PER_S,
            at_least=True,
            text=f">= {GOAL_METERS_PER_S:,.0f} meters/s ({security})",
        ),
        goal(
            top["ratio"],
            GOAL_BASELINE_RATIO,
            at_least=True,
            text=f">= {GOAL_BASELINE_RATIO:.0f}x the thread-pool baseline ({security})",
        ),
        goal(
            top["ratio_cpu_to_floor"],
            GOAL_FLOOR_RATIO,
            at_least=False,
            text=f"CPU per session within {GOAL_FLOOR_RATIO:.0f}x of the floor ({security})",
        ),
        goal(
            top["ratio_cpu_to_io_floor"],
            GOAL_IO_FLOOR_RATIO,
            at_least=False,
            text=f"CPU per session within {GOAL_IO_FLOOR_RATIO}x of the I/O floor ({security})",
        ),
        goal(top["failures"], 0, at_least=False, text=f"zero failures ({security})"),
    ]


async def run(args: Any) -> dict[str, Any]:
    securities = [s.strip() for s in args.security.split(",") if s.strip()]
    fds = raise_fd_limit(args.concurrency + args.baseline_threads + FD_MARGIN)
    result: dict[str, Any] = {"benchmark": "fleet", "transport": args.transport}
    runs: dict[str, Any] = {}
    for security in securities:
        async with sim_fleet(
            args.meters,
            latency_ms=args.latency_ms,
            transport=args.transport,
            security=security,
            start_limit_s=args.start_timeout,
        ) as fleet:
            figures = await measure_fleet(
                fleet,
                concurrency=args.concurrency,
                request_timeout=args.timeout,
                baseline_meters=min(args.baseline_meters, args.meters),
                baseline_threads=args.baseline_threads,
            )
        top = headline(security, figures, args.meters)
        top["goals"] = goals(security, top)
        top["detail"] = figures
        runs[security] = top
    first = runs[securities[0]]
    result.update({k: v for k, v in first.items() if k not in ("goals", "detail")})
    result["latency_ms"] = args.latency_ms
    result["loop"] = args.loop
    result["concurrency"] = args.concurrency
    result["fd_limit"] = fds
    result["runs"] = runs
    result["failures"] = sum(r["failures"] for r in runs.values())
    return result


def add_arguments(cli: Any, transport_choice: bool = True) -> None:
    cli.add_argument("--meters", type=int, default=10_000)
    cli.add_argument("--latency-ms", type=float, default=100.0, help="simulated answer delay")
    cli.add_argument("--concurrency", type=int, default=1000, help="our sessions in flight")
    cli.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    cli.add_argument("--security", default="none,hls-gmac", help="comma list")
    cli.add_argument(
        "--baseline-meters", type=int, default=2000, help="meters the baseline polls (0: none)"
    )
    cli.add_argument("--baseline-threads", type=int, default=64)
    cli.add_argument("--start-timeout", type=float, default=600.0, help="simulator start-up")
    cli.add_argument(
        "--loop", choices=("asyncio", "uvloop"), default="asyncio", help="client event loop"
    )
    if transport_choice:
        cli.add_argument("--transport", choices=("wrapper", "hdlc"), default="wrapper")


def main(argv: list[str] | None = None) -> int:
    cli = parser("fleet", __doc__ or "")
    add_arguments(cli)
    args = cli.parse_args(argv)
    result = run_async(run(args), args.loop)
    emit(result, args.json)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
