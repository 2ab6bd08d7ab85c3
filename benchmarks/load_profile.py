"""B6 load profile: `--days` of 15-minute entries from one meter by block transfer: entries/s.

The meter (`dlms-sim`, own process) serves the load profile 1.0.99.1.0.255 with a 1024-byte
PDU, so the buffer comes in GET-Response-with-datablock blocks. Figures from this run:
- ours: DlmsSession.read_profile(obis, start, end) (selective access by range; typed and
  scaled rows), wall time and this process's CPU;
- baseline: dlms-cosem 21.3.2's blocking DlmsClient.get(buffer, RangeDescriptor) over the
  same range, then its A-XDR parse of the buffer;
- floor: our sans-IO ClientConnection + wrapper framing through the recorded session with
  the meter's recorded blocks: reassembly and decoding alone.

    python -m benchmarks load-profile --days 35 --json"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from typing import Any

from benchmarks._common import cpu_per_call, emit, exit_code, parser, ratio, rounded
from benchmarks._proc import connection_kwargs, sim_fleet
from benchmarks._replay import CoreReplay, record

LOAD_PROFILE = "1.0.99.1.0.255"
CLOCK = (8, "0.0.1.0.0.255", 2)


def _window(days: float) -> tuple[dt.datetime, dt.datetime]:
    # Whole quarter hours, so every run asks for the same number of entries.
    end = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    end -= dt.timedelta(minutes=end.minute % 15)
    return end - dt.timedelta(days=days) + dt.timedelta(minutes=15), end


async def ours(connection: Any, start: dt.datetime, end: dt.datetime, ic_store: Any) -> dict:
    from drivers.connect import open_session

    wall0, cpu0 = time.perf_counter(), time.process_time()
    async with open_session(connection, timeout=30, ic_store=ic_store) as session:
        profile = await session.read_profile(LOAD_PROFILE, start, end)
    return {
        "entries": len(profile.rows),
        "wall_s": time.perf_counter() - wall0,
        "cpu_s": time.process_time() - cpu0,
    }


def baseline(row: dict[str, str], start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
    """dlms-cosem's blocking client: the same range read, then its parse of the buffer."""
    from dlms_cosem import cosem, enumerations, utils
    from dlms_cosem.clients.dlms_client import DlmsClient
    from dlms_cosem.cosem.capture_object import CaptureObject
    from dlms_cosem.cosem.selective_access import RangeDescriptor

    if row["security"] != "none":
        raise ValueError("the load-profile baseline runs without security")
    wall0, cpu0 = time.perf_counter(), time.process_time()
    client = DlmsClient.with_tcp_transport(
        host=row["host"],
        port=int(row["port"]),
        client_logical_address=int(row["client_sap"]),
        server_logical_address=int(row["server_logical"]),
        timeout=30,
    )
    clock = CaptureObject(
        cosem.CosemAttribute(
            enumerations.CosemInterface(CLOCK[0]), cosem.Obis.from_string(CLOCK[1]), CLOCK[2]
        )
    )
    buffer = cosem.CosemAttribute(
        enumerations.CosemInterface.PROFILE_GENERIC, cosem.Obis.from_string(LOAD_PROFILE), 2
    )
    with client.session():
        raw = client.get(buffer, access_descriptor=RangeDescriptor(clock, start, end))
    entries = utils.parse_as_dlms_data(raw)
    return {
        "entries": len(entries),
        "wall_s": time.perf_counter() - wall0,
        "cpu_s": time.process_time() - cpu0,
    }


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return min(runs, key=lambda r: r["wall_s"])


async def run(days: float, repeat: int, latency_ms: float) -> dict[str, Any]:
    from drivers.connect import MeterConnection
    from drivers.session import MemoryInvocationCounterStore

    start, end = _window(days)
    expected = round(days * 96)
    result: dict[str, Any] = {
        "benchmark": "load-profile",
        "days": days,
        "expected_entries": expected,
        "latency_ms": latency_ms,
    }
    logging.getLogger("dlms_cosem").setLevel(logging.ERROR)
    async with sim_fleet(1, latency_ms=latency_ms, seed=6) as fleet:
        row = fleet.rows[0]
        connection = MeterConnection(**connection_kwargs(row))
        ic_store = MemoryInvocationCounterStore(start=1)

        async def read(session: Any) -> Any:
            return await session.read_profile(LOAD_PROFILE, start, end)

        recording = await record(connection, read, ic_store=ic_store)
        floor_s = cpu_per_call(CoreReplay(recording), min_s=0.5, min_calls=3)
        mine = _best([await ours(connection, start, end, ic_store) for _ in range(repeat)])
        theirs = _best([await asyncio.to_thread(baseline, row, start, end) for _ in range(repeat)])
    entries = mine["entries"]
    result.update(
        {
            "entries": entries,
            "entries_per_s": rounded(entries / mine["wall_s"], 0),
            "client_cpu_us_per_entry": rounded(mine["cpu_s"] / max(entries, 1) * 1e6, 2),
            "baseline_entries": theirs["entries"],
            "baseline_entries_per_s": rounded(theirs["entries"] / theirs["wall_s"], 0),
            "baseline_cpu_us_per_entry": rounded(
                theirs["cpu_s"] / max(theirs["entries"], 1) * 1e6, 2
            ),
            "floor_cpu_us_per_entry": rounded(floor_s / max(entries, 1) * 1e6, 2),
            "ratio_to_baseline": ratio(
                entries / mine["wall_s"], theirs["entries"] / theirs["wall_s"]
            ),
            "ratio_cpu_to_floor": ratio(mine["cpu_s"], floor_s),
            "blocks": sum(1 for request, _ in recording.pairs if request[:2] == b"\xc0\x02") + 1,
            "bytes": recording.bytes_exchanged,
            "wall_s": rounded(mine["wall_s"], 3),
            "baseline_wall_s": rounded(theirs["wall_s"], 3),
        }
    )
    # Every entry of the window must arrive, from both clients.
    result["failures"] = int(entries != expected) + int(theirs["entries"] != expected)
    return result


def main(argv: list[str] | None = None) -> int:
    cli = parser("load-profile", __doc__ or "")
    cli.add_argument("--days", type=float, default=35.0)
    cli.add_argument("--repeat", type=int, default=3, help="reads per client; the best counts")
    cli.add_argument("--latency-ms", type=float, default=0.0, help="simulated answer delay")
    args = cli.parse_args(argv)
    result = asyncio.run(run(args.days, args.repeat, args.latency_ms))
    emit(result, args.json)
    return exit_code(result)


if __name__ == "__main__":
    raise SystemExit(main())
