"""B4 HDLC: the B1 fleet poll over HDLC on TCP, beside the same poll over the wrapper.

Two fleets of `--meters` run one after the other (`dlms-sim --transport hdlc`, then
`--transport wrapper`), each polled once by the head-end client exactly as in B1. The wrapper
figure is the baseline; each transport also gets its sans-IO floor (our ClientConnection +
that transport's framing through the recorded session: for HDLC the sans-IO HdlcClientConnection
fed the meter's recorded frames, SNRM/UA and DISC/UA included).

    python -m benchmarks fleet-hdlc --meters 10000 --latency-ms 100 --json"""

from __future__ import annotations

from typing import Any

from benchmarks._common import emit, goal, parser, raise_fd_limit, ratio, run_async
from benchmarks._proc import sim_fleet
from benchmarks.fleet import FD_MARGIN, add_arguments, measure_fleet

HDLC_OVERHEAD_GOAL = 0.30  # issue 2: HDLC framing adds under 30 % (CPU per session)


async def run(args: Any) -> dict[str, Any]:
    security = args.security.split(",")[0].strip()
    fds = raise_fd_limit(args.concurrency + FD_MARGIN)
    figures: dict[str, Any] = {}
    for transport in ("hdlc", "wrapper"):
        async with sim_fleet(
            args.meters,
            latency_ms=args.latency_ms,
            transport=transport,
            security=security,
            start_limit_s=args.start_timeout,
        ) as fleet:
            figures[transport] = await measure_fleet(
                fleet,
                concurrency=args.concurrency,
                request_timeout=args.timeout,
                baseline_meters=0,
                baseline_threads=0,
            )
    hdlc, wrapper = figures["hdlc"], figures["wrapper"]
    cpu_ratio = ratio(hdlc["cpu_ms_per_session"], wrapper["cpu_ms_per_session"])
    overhead = None if cpu_ratio is None else round(cpu_ratio - 1, 3)
    failures = hdlc["failures"] + wrapper["failures"]
    return {
        "benchmark": "fleet-hdlc",
        "meters": args.meters,
        "security": security,
        "latency_ms": args.latency_ms,
        "concurrency": args.concurrency,
        "loop": args.loop,
        "meters_per_s": hdlc["meters_per_s"],
        "wrapper_meters_per_s": wrapper["meters_per_s"],
        "ratio": ratio(hdlc["meters_per_s"], wrapper["meters_per_s"]),
        "client_cpu_ms_per_session": hdlc["cpu_ms_per_session"],
        "wrapper_client_cpu_ms_per_session": wrapper["cpu_ms_per_session"],
        "hdlc_cpu_overhead": overhead,
        "floor_cpu_ms_per_session": hdlc["floor_cpu_ms_per_session"],
        "wrapper_floor_cpu_ms_per_session": wrapper["floor_cpu_ms_per_session"],
        "p50_session_s": hdlc["p50_session_s"],
        "p99_session_s": hdlc["p99_session_s"],
        "wrapper_p99_session_s": wrapper["p99_session_s"],
        "failures": failures,
        "goals": [
            goal(
                overhead,
                HDLC_OVERHEAD_GOAL,
                at_least=False,
                text=f"HDLC adds under {HDLC_OVERHEAD_GOAL:.0%} CPU per session over the wrapper",
            ),
            goal(failures, 0, at_least=False, text="zero failures"),
        ],
        "fd_limit": fds,
        "detail": figures,
    }


def main(argv: list[str] | None = None) -> int:
    cli = parser("fleet-hdlc", __doc__ or "")
    add_arguments(cli, transport_choice=False)
    cli.set_defaults(security="none")
    args = cli.parse_args(argv)
    result = run_async(run(args), args.loop)
    emit(result, args.json)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
