"""How fast `dlms-sim` gets N meters listening, and what the idle fleet costs in memory.

Runs the real command (`python -m simulators`) as a child process, times from spawn to the
`ready: N meters` line, checks that the first and last meters answer a real DLMS read, lets the
fleet idle, reads its resident set size from /proc, then stops it with SIGTERM. Prints one JSON
object; `ok` is the target from the issue (start < 30 s, idle RSS < 1 GB).

    python -m benchmarks sim-startup --meters 10000"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import sys
import tempfile
import time
from pathlib import Path

from drivers.connect import MeterConnection, open_session
from simulators.inventory import read_inventory

START_LIMIT_S = 30.0
RSS_LIMIT_MB = 1024.0
SERIAL_NUMBER = "0.0.96.1.0.255"


def _proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM in kB from /proc (Linux)."""
    values: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return values
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def _ports_in_use() -> set[int]:
    """Local TCP ports any socket holds (listening or connected), from /proc/net/tcp{,6}."""
    used: set[int] = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local = line.split()[1]
            used.add(int(local.rsplit(":", 1)[1], 16))
    return used


def free_port_run(count: int) -> int:
    """A base port with `count` unused ports after it, below the ephemeral range if possible."""
    used = _ports_in_use()
    low, high = 1024, 65535
    try:
        low_eph = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low_eph = 32768
    candidates = [*range(low, max(low_eph - count, low) + 1, 97), *range(low_eph, high - count, 97)]
    for base in candidates:
        if base + count - 1 <= high and not any(p in used for p in range(base, base + count)):
            return base
    raise RuntimeError(f"no run of {count} free ports")


def _open_fds(pid: int) -> int:
    try:
        return len(list(Path(f"/proc/{pid}/fd").iterdir()))
    except OSError:
        return -1


async def _probe(row: dict[str, str]) -> bool:
    connection = MeterConnection(
        host=row["host"],
        port=int(row["port"]),
        transport=row["transport"],
        client_sap=int(row["client_sap"]),
        server_logical=int(row["server_logical"]),
        server_physical=int(row["server_physical"]) if row["server_physical"] else None,
        security=row["security"],
        password=row["password"].encode() or None,
        auth_key=bytes.fromhex(row["auth_key"]) or None,
        enc_key=bytes.fromhex(row["enc_key"]) or None,
    )
    async with open_session(connection, timeout=10) as session:
        readings = await session.read([SERIAL_NUMBER])
    return bool(readings[SERIAL_NUMBER].value == row["meter_id"])


async def run(args: argparse.Namespace) -> dict[str, object]:
    port = free_port_run(args.meters) if args.port == "auto" else int(args.port)
    with tempfile.TemporaryDirectory() as directory:
        inventory = Path(directory) / "inventory.csv"
        command = [
            sys.executable,
            "-m",
            "simulators",
            "--parent-pid",  # gone with us, however we die
            str(os.getpid()),
            "--meters",
            str(args.meters),
            "--port",
            str(port),
            "--transport",
            args.transport,
            "--security",
            args.security,
            "--inventory",
            str(inventory),
        ]
        began = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        assert process.stdout is not None and process.stderr is not None
        try:
            ready_line = ""
            async with asyncio.timeout(args.timeout):
                while not ready_line.startswith("ready:"):
                    raw = await process.stdout.readline()
                    if not raw:
                        error = (await process.stderr.read()).decode().strip()
                        raise RuntimeError(f"dlms-sim exited before ready: {error}")
                    ready_line = raw.decode().strip()
            start_s = time.monotonic() - began
            rows = read_inventory(inventory)
            probes = [rows[0], rows[-1]]
            answered = [await _probe(row) for row in probes]
            await asyncio.sleep(args.idle_s)
            status = _proc_status(process.pid)
            fds = _open_fds(process.pid)
            stop_began = time.monotonic()
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(60):
                code = await process.wait()
            stop_s = time.monotonic() - stop_began
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    rss_mb = status.get("VmRSS", 0) / 1024
    return {
        "benchmark": "sim-startup",
        "meters": args.meters,
        "transport": args.transport,
        "base_port": port,
        "security": args.security,
        "start_s": round(start_s, 3),
        "rss_mb": round(rss_mb, 1),
        "peak_rss_mb": round(status.get("VmHWM", 0) / 1024, 1),
        "open_fds": fds,
        "stop_s": round(stop_s, 3),
        "exit_code": code,
        "probes_answered": all(answered),
        "fd_limit_hard": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        "ok": start_s < START_LIMIT_S and rss_mb < RSS_LIMIT_MB and all(answered) and code == 0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks sim-startup")
    parser.add_argument("--meters", type=int, default=10_000)
    parser.add_argument(
        "--port",
        default="auto",
        help="base port; auto = a free run of ports; 0 = an ephemeral port per meter (slower: "
        "the kernel searches its ephemeral range for every bind)",
    )
    parser.add_argument("--transport", choices=("wrapper", "hdlc"), default="wrapper")
    parser.add_argument("--security", choices=("none", "lls", "hls-gmac"), default="none")
    parser.add_argument("--idle-s", type=float, default=3.0, help="idle time before RSS")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up after this")
    parser.add_argument("--json", action="store_true", help="accepted; the output is JSON anyway")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
