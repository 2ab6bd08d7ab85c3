"""Client CPU per session (associate + 4 GETs + release), over the wrapper and over HDLC.

Three figures per security level, all from this run:
- full stack: DlmsSession over real TCP to `dlms-sim` in its own process, sessions one after
  another; this process's CPU (time.process_time) divided by the sessions;
- our sans-IO stack: the same exchange replayed through ClientConnection + framing with the
  meter's recorded replies (no sockets, no event loop);
- the floor: dlms-cosem 21.3.2's sans-IO DlmsConnection (send / receive_data / next_event,
  plus its A-XDR parse of each value) through the same exchange with canned replies.
Goals (issue 2): the wrapper session within 1.5x of the floor; HDLC adds under 30 %.

    python -m benchmarks session-cpu --json"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._canned_server import io_floor_session
from benchmarks._common import cpu_per_call, emit, exit_code, goal, parser, ratio, rounded
from benchmarks._proc import connection_kwargs, sim_fleet, spawn
from benchmarks._replay import CoreReplay, DlmsCosemReplay, record

ATTRIBUTES = (
    (3, "1.0.1.8.0.255", 2),
    (3, "1.0.2.8.0.255", 2),
    (3, "1.0.32.7.0.255", 2),
    (70, "0.0.96.3.10.255", 2),
)
EXCHANGE = "associate + 4 x GET-Request-Normal (attribute 2) + release"
FLOOR_RATIO_GOAL = 1.5
HDLC_OVERHEAD_GOAL = 0.30


async def four_gets(session: Any) -> list[Any]:
    return [await session.get(c, o, a) for c, o, a in ATTRIBUTES]


async def full_stack(
    connection: Any, min_s: float, min_sessions: int, ic_store: Any
) -> dict[str, Any]:
    """Sessions one after another against the simulator process; this process's CPU."""
    from drivers.connect import open_session

    async def one() -> None:
        async with open_session(connection, timeout=10, ic_store=ic_store) as session:
            await four_gets(session)

    await one()  # warm-up: imports, first connection
    sessions = 0
    times0 = os.times()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while sessions < min_sessions or time.process_time() - cpu0 < min_s:
        await one()
        sessions += 1
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    times1 = os.times()
    return {
        "sessions": sessions,
        "cpu_s": cpu,
        "wall_s": wall,
        "user_s": times1.user - times0.user,
        "system_s": times1.system - times0.system,
    }


async def io_floor(recording: Any, min_s: float, min_sessions: int) -> float:
    """CPU per session of the same connection and round trips (same byte counts) through a
    bare asyncio Protocol against a canned-reply server process: sockets and event loop only."""
    from drivers.wrapper import encode_wrapper

    client, server = recording.connection.client_sap, recording.connection.server_logical
    requests = [encode_wrapper(client, server, request) for request, _ in recording.pairs]
    replies = [encode_wrapper(server, client, reply).hex() for _, reply in recording.pairs]
    with tempfile.TemporaryDirectory(prefix="bench-canned-") as directory:
        path = Path(directory) / "replies.json"
        path.write_text(json.dumps(replies))
        argv = [sys.executable, "-m", "benchmarks._canned_server", str(path)]
        async with spawn(argv) as child:
            line = await child.wait_for(lambda text: text.startswith("ready "), 60)
            port = int(line.split()[1])
            await io_floor_session(port, requests)
            sessions = 0
            cpu0 = time.process_time()
            while sessions < min_sessions or time.process_time() - cpu0 < min_s:
                await io_floor_session(port, requests)
                sessions += 1
            return (time.process_time() - cpu0) / sessions


async def measure_security(security: str, min_s: float, min_sessions: int) -> dict[str, Any]:
    from drivers.connect import MeterConnection
    from drivers.session import MemoryInvocationCounterStore

    out: dict[str, Any] = {}
    per_session: dict[str, float] = {}
    for transport in ("wrapper", "hdlc"):
        async with sim_fleet(1, transport=transport, security=security, seed=5) as fleet:
            connection = MeterConnection(**connection_kwargs(fleet.rows[0]))
            ic_start = 1_000
            if transport == "wrapper":
                # dlms-cosem first: its invocation counters start low and the meter refuses
                # counters it has seen; ours then start above them.
                floor = DlmsCosemReplay(connection, ATTRIBUTES)
                await asyncio.to_thread(floor.record)
                per_session["floor_dlms_cosem"] = cpu_per_call(floor, min_s=min_s)
                # Its blocking client over TCP, for reference (nothing else runs meanwhile).
                per_session["dlms_cosem_blocking_tcp"] = cpu_per_call(
                    floor.live_session, min_s=min_s, min_calls=min_sessions
                )
                ic_start = floor.invocation_counter + 100
            ic_store = MemoryInvocationCounterStore(start=ic_start)
            recording = await record(connection, four_gets, ic_store=ic_store)
            replay = CoreReplay(recording)
            if transport == "wrapper":
                out["bytes_per_session"] = recording.bytes_exchanged
                out["round_trips_per_session"] = len(recording.pairs)
                per_session["io_floor_wrapper"] = await io_floor(recording, min_s, min_sessions)
            per_session[f"sansio_{transport}"] = cpu_per_call(replay, min_s=min_s)
            full = await full_stack(connection, min_s, min_sessions, ic_store)
            per_session[f"full_{transport}"] = full["cpu_s"] / full["sessions"]
            out[f"full_{transport}_sessions"] = full["sessions"]
            out[f"full_{transport}_kernel_share"] = ratio(full["system_s"], full["cpu_s"])
            out[f"full_{transport}_sessions_per_s"] = rounded(full["sessions"] / full["wall_s"], 1)
    floor_s = per_session["floor_dlms_cosem"]
    for name, seconds in per_session.items():
        out[f"{name}_cpu_us"] = rounded(seconds * 1e6, 1)
    out["ratio_full_wrapper_to_floor"] = ratio(per_session["full_wrapper"], floor_s)
    out["ratio_full_hdlc_to_floor"] = ratio(per_session["full_hdlc"], floor_s)
    out["ratio_sansio_wrapper_to_floor"] = ratio(per_session["sansio_wrapper"], floor_s)
    out["ratio_dlms_cosem_blocking_tcp_to_floor"] = ratio(
        per_session["dlms_cosem_blocking_tcp"], floor_s
    )
    # Where the full wrapper session's CPU goes: sockets + event loop, the protocol, the rest.
    out["full_wrapper_breakdown_us"] = {
        "io_floor": rounded(per_session["io_floor_wrapper"] * 1e6, 1),
        "sansio_protocol": rounded(per_session["sansio_wrapper"] * 1e6, 1),
        "session_layer_rest": rounded(
            (
                per_session["full_wrapper"]
                - per_session["io_floor_wrapper"]
                - per_session["sansio_wrapper"]
            )
            * 1e6,
            1,
        ),
    }
    hdlc_full = ratio(per_session["full_hdlc"], per_session["full_wrapper"])
    hdlc_sansio = ratio(per_session["sansio_hdlc"], per_session["sansio_wrapper"])
    out["hdlc_overhead_full"] = None if hdlc_full is None else rounded(hdlc_full - 1, 3)
    out["hdlc_overhead_sansio"] = None if hdlc_sansio is None else rounded(hdlc_sansio - 1, 3)
    out["goals"] = [
        goal(
            out["ratio_full_wrapper_to_floor"],
            FLOOR_RATIO_GOAL,
            at_least=False,
            text=(
                f"wrapper session CPU within {FLOOR_RATIO_GOAL}x of dlms-cosem sans-IO ({security})"
            ),
        ),
        goal(
            out["hdlc_overhead_full"],
            HDLC_OVERHEAD_GOAL,
            at_least=False,
            text=f"HDLC adds under {HDLC_OVERHEAD_GOAL:.0%} to the wrapper session ({security})",
        ),
    ]
    return out


async def run(securities: list[str], min_s: float, min_sessions: int) -> dict[str, Any]:
    result: dict[str, Any] = {
        "benchmark": "session-cpu",
        "exchange": EXCHANGE,
        "floor": "dlms-cosem 21.3.2 DlmsConnection send/receive_data/next_event, canned replies",
    }
    # dlms-cosem logs every deciphered APDU at WARNING; a deployment would silence that.
    logging.getLogger("dlms_cosem").setLevel(logging.ERROR)
    for security in securities:
        result[security] = await measure_security(security, min_s, min_sessions)
    result["failures"] = 0  # any failed session raises and ends the run
    return result


def main(argv: list[str] | None = None) -> int:
    cli = parser("session-cpu", __doc__ or "")
    cli.add_argument("--security", default="none,hls-gmac", help="comma list: none,lls,hls-gmac")
    cli.add_argument("--min-s", type=float, default=1.0, help="CPU seconds per measurement")
    cli.add_argument("--min-sessions", type=int, default=20, help="full-stack sessions, at least")
    args = cli.parse_args(argv)
    securities = [s.strip() for s in args.security.split(",") if s.strip()]
    result = asyncio.run(run(securities, args.min_s, args.min_sessions))
    emit(result, args.json)
    return exit_code(result)


if __name__ == "__main__":
    raise SystemExit(main())
