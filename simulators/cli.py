"""`dlms-sim`: run a fleet of simulated meters until Ctrl-C or SIGTERM.

Stdout carries only what scripts wait for -- `serial: ...` lines, `control: ...`,
`inventory: ...` and finally `ready: N meters` once every meter listens -- each flushed at
once; diagnostics go to stderr. Flags given on the command line win over a --fleet file."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections.abc import Sequence

from drivers.event_loop import run as run_loop
from simulators.config import DEFAULT_PUSH_INTERVAL_S, PUSH_TRANSPORTS, PushSpec
from simulators.control import ControlServer
from simulators.fleet import Fleet, FleetError
from simulators.fleet_spec import (
    SECURITIES,
    FleetFileError,
    FleetSpec,
    build_configs,
    load_fleet_file,
    normalise_windows,
)
from simulators.lifeline import watch_parent
from simulators.servers import ServerStartError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dlms-sim",
        description="Simulated DLMS/COSEM prepaid meters: meter i listens on host:port+i.",
    )
    add = parser.add_argument
    add("--meters", type=int, help="number of meters (default 1)")
    add("--host", help="address to listen on (default 127.0.0.1)")
    add("--port", type=int, help="port of meter 0 (default 4059; 0 = ephemeral ports)")
    add("--transport", choices=("wrapper", "hdlc"), help="TCP framing (default wrapper)")
    add("--security", choices=SECURITIES, help="association in the inventory (default none)")
    add("--latency-ms", type=float, help="fixed answer delay")
    add("--jitter-ms", type=float, help="random extra delay, up to this much")
    add("--inventory", help="write the inventory CSV here")
    add("--seed", type=int, help="seed for serial numbers, passwords, keys and load curves")
    add("--control-mode", type=int, help="Disconnect control mode 0-6 (default 2)")
    add("--fleet", metavar="FILE", help="TOML fleet file (see config/fleet.example.toml)")
    add("--control-port", type=int, help="serve the JSON-lines control interface here")
    add("--control-host", default="127.0.0.1", help="control interface address")
    add(
        "--parent-pid",
        type=int,
        help="stop as soon as this process (the one that started us) is gone, however it "
        "died (SIGKILL included)",
    )
    push = parser.add_argument_group("pushes (every meter; README: dlms-sim pushes)")
    push.add_argument(
        "--push-to", metavar="HOST:PORT", help="send DataNotifications to this head-end listener"
    )
    push.add_argument(
        "--push-interval",
        type=float,
        metavar="S",
        help=f"seconds between interval pushes (default {DEFAULT_PUSH_INTERVAL_S:g}; 0 = none)",
    )
    push.add_argument(
        "--push-transport", choices=PUSH_TRANSPORTS, help="tcp (wrapper), udp (wrapper) or hdlc"
    )
    push.add_argument(
        "--inbound-only",
        action="store_true",
        help="listen nowhere: connect out to --push-to and serve requests on that connection",
    )
    serial = parser.add_argument_group("serial lines")
    serial.add_argument(
        "--serial", action="store_true", help="serve meters on pseudo-terminals instead of TCP"
    )
    serial.add_argument("--meters-per-line", type=int, help="HDLC addresses per line (RS-485)")
    serial.add_argument("--baud", type=int, help="line speed (default 9600)")
    serial.add_argument(
        "--pace", action="store_true", default=None, help="hold answers to the baud rate"
    )
    faults = parser.add_argument_group("faults (fleet-wide; per meter in --fleet)")
    faults.add_argument("--drop-rate", type=float, help="share of answers dropped (0-1)")
    faults.add_argument("--corrupt-rate", type=float, help="share of frames sent damaged (0-1)")
    faults.add_argument(
        "--close-rate", type=float, help="share of requests answered by a hang-up (0-1)"
    )
    faults.add_argument(
        "--refuse-association", action="store_true", default=None, help="reject every AARQ"
    )
    faults.add_argument(
        "--relay-stuck", action="store_true", default=None, help="relay ACTIONs do nothing"
    )
    faults.add_argument(
        "--relay-failure", action="store_true", default=None, help="relay ACTIONs fail"
    )
    faults.add_argument("--clock-drift", type=float, metavar="S_PER_DAY", help="clock drift")
    faults.add_argument(
        "--offline-window",
        action="append",
        metavar="START:END",
        help="seconds after start when meters are off the air (repeatable)",
    )
    return parser


_FLAG_TO_SPEC = {
    "meters": "meters",
    "host": "host",
    "port": "port",
    "transport": "transport",
    "security": "security",
    "latency_ms": "latency_ms",
    "jitter_ms": "jitter_ms",
    "seed": "seed",
    "control_mode": "control_mode",
    "inventory": "inventory",
    "control_port": "control_port",
}
_FLAG_TO_FAULT = {
    "drop_rate": "drop_rate",
    "corrupt_rate": "corrupt_rate",
    "close_rate": "close_mid_session_rate",
    "refuse_association": "refuse_association",
    "relay_stuck": "relay_stuck",
    "relay_failure": "relay_failure",
    "clock_drift": "clock_drift_s_per_day",
}


def spec_from_args(args: argparse.Namespace) -> FleetSpec:
    """The fleet file (if any), then every flag that was given on top."""
    spec = load_fleet_file(args.fleet) if args.fleet else FleetSpec()
    for flag, name in _FLAG_TO_SPEC.items():
        value = getattr(args, flag)
        if value is not None:
            setattr(spec, name, value)
    if args.serial:
        spec.transport = "serial"
    if args.meters_per_line is not None:
        spec.serial.meters_per_line = args.meters_per_line
    if args.baud is not None:
        spec.serial.baud = args.baud
    if args.pace:
        spec.serial.pace = True
    for flag, name in _FLAG_TO_FAULT.items():
        value = getattr(args, flag)
        if value is not None:
            spec.faults[name] = value
    spec.push = push_from_args(args)
    if args.offline_window:
        spec.faults["offline_windows"] = normalise_windows(
            "--offline-window", [_window(text) for text in args.offline_window]
        )
    spec.validate()
    return spec


def push_from_args(args: argparse.Namespace) -> PushSpec | None:
    if args.push_to is None:
        if args.push_interval is not None or args.push_transport or args.inbound_only:
            raise FleetFileError(
                "--push-interval, --push-transport and --inbound-only need --push-to"
            )
        return None
    try:
        host, port = PushSpec.parse_destination(args.push_to)
        return PushSpec(
            host,
            port,
            interval_s=DEFAULT_PUSH_INTERVAL_S
            if args.push_interval is None
            else args.push_interval,
            transport=args.push_transport or "tcp",
            inbound_only=args.inbound_only,
        )
    except ValueError as exc:
        raise FleetFileError(str(exc)) from None


def _window(text: str) -> list[float]:
    start, sep, end = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return [float(start), float(end)]
    except ValueError:
        raise FleetFileError(f"--offline-window: {text!r} is not START:END seconds") from None


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _say(text: str) -> None:
    print(text, flush=True)


async def serve(
    spec: FleetSpec, *, control_host: str = "127.0.0.1", parent_pid: int | None = None
) -> int:
    """Run until SIGINT/SIGTERM/SIGHUP (or the parent is gone); returns the exit status."""
    began = time.monotonic()
    fleet = Fleet(build_configs(spec), serial=spec.serial)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    control: ControlServer | None = None
    lifeline = None if parent_pid is None else asyncio.create_task(watch_parent(parent_pid, stop))
    try:
        await fleet.start()
        for line in fleet.lines:
            members = " ".join(
                f"{runtime.config.meter_id}@{runtime.config.server_physical}"
                for runtime in line.runtimes
            )
            _say(f"serial: {line.path} {members}")
        if spec.control_port is not None:
            control = ControlServer(fleet, control_host, spec.control_port)
            await control.start()
            _say(f"control: {control.host}:{control.port}")
        if spec.push is not None:
            mode = ", inbound only" if spec.push.inbound_only else ""
            _say(f"push: {spec.push.destination} ({spec.push.transport}{mode})")
        if spec.inventory:
            fleet.write_inventory(spec.inventory)
            _say(f"inventory: {spec.inventory}")
        _say(f"ready: {len(fleet)} meters")
        print(
            f"dlms-sim: {len(fleet)} meters up in {time.monotonic() - began:.2f} s",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()
    finally:
        if lifeline is not None:
            lifeline.cancel()
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
        if control is not None:
            await control.stop()
        await fleet.stop()
    print("dlms-sim: stopped", file=sys.stderr, flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        spec = spec_from_args(args)
        return run_loop(  # uvloop if installed
            serve(spec, control_host=args.control_host, parent_pid=args.parent_pid)
        )
    except (FleetFileError, FleetError, ServerStartError) as exc:
        print(f"dlms-sim: {exc}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
