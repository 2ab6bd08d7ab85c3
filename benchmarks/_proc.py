"""Child processes for benchmarks: the simulator fleet, the daemon, a bare interpreter.

Running them apart from the measuring process keeps their CPU out of the figures: the
benchmark's own CPU comes from time.process_time(), a child's from /proc/PID/stat."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import random
import signal
import sys
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._common import proc_cpu_s, proc_rss_mb


@dataclass
class Child:
    """A running child process; the last lines of its output are kept for error messages."""

    process: asyncio.subprocess.Process
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=40))
    lines: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(maxsize=1000))
    _readers: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_s(self) -> float:
        return proc_cpu_s(self.pid)

    def rss_mb(self) -> tuple[float, float]:
        return proc_rss_mb(self.pid)

    async def wait_for(self, predicate: Callable[[str], bool], limit_s: float) -> str:
        """The first output line (stdout or stderr) for which `predicate` holds."""
        async with asyncio.timeout(limit_s):
            while True:
                getter = asyncio.ensure_future(self.lines.get())
                waiter = asyncio.ensure_future(self.process.wait())
                done, _ = await asyncio.wait({getter, waiter}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    waiter.cancel()
                    line = getter.result()
                    if predicate(line):
                        return line
                    continue
                getter.cancel()
                await asyncio.sleep(0.2)  # let the readers drain what is left
                raise RuntimeError(
                    f"child exited with {self.process.returncode} before it was ready:\n"
                    + "\n".join(self.tail)
                )

    async def stop(self, limit_s: float = 60.0) -> int:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(limit_s):
                    await self.process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        for task in self._readers:
            task.cancel()
        return self.process.returncode if self.process.returncode is not None else -1


async def _pump(stream: asyncio.StreamReader, child: Child) -> None:
    while True:
        raw = await stream.readline()
        if not raw:
            return
        line = raw.decode(errors="replace").rstrip()
        child.tail.append(line)
        if child.lines.full():  # nobody is waiting for lines: keep the newest only
            child.lines.get_nowait()
        child.lines.put_nowait(line)


@contextlib.asynccontextmanager
async def spawn(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | None = None
) -> AsyncIterator[Child]:
    """Start `argv`, collect its output lines, SIGTERM it on exit."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=full_env,
        cwd=cwd,
    )
    child = Child(process)
    assert process.stdout is not None and process.stderr is not None
    child._readers = [
        asyncio.create_task(_pump(process.stdout, child)),
        asyncio.create_task(_pump(process.stderr, child)),
    ]
    try:
        yield child
    finally:
        await child.stop()


# -- the simulator fleet ------------------------------------------------------------------------
@dataclass
class SimFleet:
    child: Child
    rows: list[dict[str, str]]
    start_s: float
    inventory: Path  # the CSV dlms-sim wrote (gone once the fleet stops)


def connection_kwargs(row: Mapping[str, str]) -> dict[str, Any]:
    """drivers.connect.MeterConnection keyword arguments from an inventory CSV row."""
    return {
        "host": row["host"],
        "port": int(row["port"]),
        "transport": row["transport"],
        "client_sap": int(row["client_sap"]),
        "server_logical": int(row["server_logical"]),
        "server_physical": int(row["server_physical"]) if row["server_physical"] else None,
        "security": row["security"],
        "password": row["password"].encode() or None,
        "auth_key": bytes.fromhex(row["auth_key"]) or None,
        "enc_key": bytes.fromhex(row["enc_key"]) or None,
    }


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="ascii") as handle:
        return list(csv.DictReader(handle))


def local_port_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def base_ports(meters: int, attempts: int = 4) -> list[int]:
    """Base ports for a fleet below the ephemeral range: 10,000 meters on ephemeral ports take
    a third of that range, and the client's closed connections wait out TIME_WAIT there too,
    so back-to-back runs would run out of ports. Port 0 (ephemeral) when nothing fits."""
    low, _high = local_port_range()
    top = low - meters
    if meters < 200 or top <= 10_000:
        return [0]
    return [random.randrange(10_000, top) for _ in range(attempts)] + [0]


@contextlib.asynccontextmanager
async def sim_fleet(
    meters: int,
    *,
    latency_ms: float = 0.0,
    transport: str = "wrapper",
    security: str = "none",
    seed: int = 1,
    start_limit_s: float = 300.0,
    extra: Sequence[str] = (),
) -> AsyncIterator[SimFleet]:
    """`dlms-sim` (as `python -m simulators`) in its own process; a busy port range is tried
    again elsewhere."""
    import time

    with tempfile.TemporaryDirectory(prefix="bench-sim-") as directory:
        inventory = Path(directory) / "inventory.csv"
        candidates = base_ports(meters)
        for attempt, base in enumerate(candidates):
            argv = [
                sys.executable,
                "-m",
                "simulators",
                "--parent-pid",  # gone with us, however we die
                str(os.getpid()),
                "--meters",
                str(meters),
                "--port",
                str(base),
                "--transport",
                transport,
                "--security",
                security,
                "--latency-ms",
                str(latency_ms),
                "--seed",
                str(seed),
                "--inventory",
                str(inventory),
                *extra,
            ]
            began = time.monotonic()
            async with spawn(argv) as child:
                try:
                    await child.wait_for(lambda line: line.startswith("ready:"), start_limit_s)
                except RuntimeError as exc:
                    if "in use" in str(exc) and attempt + 1 < len(candidates):
                        continue
                    raise
                start_s = time.monotonic() - began
                rows = await asyncio.to_thread(read_rows, inventory)
                yield SimFleet(child, rows, start_s, inventory)
                return
