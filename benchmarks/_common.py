"""What every benchmark shares: machine facts, CPU/RSS meters, percentiles, goals, output.

The machine is shared and noisy, so no figure stands alone: each benchmark measures a
baseline or a floor in the same run and reports the ratio. Output is one JSON object (with
--json) or the same keys as readable lines."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OBIS_REGISTERS = ("1.0.1.8.0.255", "1.0.2.8.0.255", "1.0.32.7.0.255", "0.0.96.3.10.255")


# -- machine ------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ram_gb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return 0.0


def machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "ram_gb": ram_gb(),
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


# -- meters -------------------------------------------------------------------------------------
def peak_rss_mb() -> float:
    """This process's peak resident set (ru_maxrss is in kB on Linux)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def proc_rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident set of another process, from /proc (Linux); 0 when unknown."""
    values = {"VmRSS": 0, "VmHWM": 0}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in values:
                values[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return round(values["VmRSS"] / 1024, 1), round(values["VmHWM"] / 1024, 1)


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds another process has used so far (/proc/PID/stat)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text.rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def machine_busy_s() -> float:
    """CPU seconds all processes on the machine have used (/proc/stat, every core)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    except (OSError, ValueError):
        return 0.0
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def pids_named(name: str) -> list[int]:
    """Processes whose command name is `name` (e.g. the broker), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def others_cpu_percent(busy_s: float, ours_s: float, wall_s: float) -> float | None:
    """CPU (percent of one core) used meanwhile by processes outside the benchmark: the noise
    of a shared machine, beside every figure measured on it."""
    if wall_s <= 0 or busy_s <= 0:
        return None
    return round(max(0.0, busy_s - ours_s) / wall_s * 100, 1)


@dataclass
class Span:
    """Wall and CPU time of this process over a `measure()` block."""

    wall_s: float = 0.0
    cpu_s: float = 0.0


@contextmanager
def measure() -> Iterator[Span]:
    span = Span()
    wall0 = time.perf_counter()
    cpu0 = time.process_time()
    try:
        yield span
    finally:
        span.wall_s = time.perf_counter() - wall0
        span.cpu_s = time.process_time() - cpu0


def cpu_per_call(
    function: Callable[[], object], *, min_s: float = 0.5, min_calls: int = 20
) -> float:
    """CPU seconds per call of `function`, repeated until `min_s` of CPU has been used."""
    function()  # warm caches and imports
    calls = 0
    began = time.process_time()
    while True:
        function()
        calls += 1
        used = time.process_time() - began
        if calls >= min_calls and used >= min_s:
            return used / calls


def raise_fd_limit(needed: int) -> dict[str, Any]:
    """Lift the soft RLIMIT_NOFILE to the hard limit; say whether `needed` fits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return {"soft": soft, "hard": hard, "needed": needed, "enough": soft >= needed}


# -- statistics ---------------------------------------------------------------------------------
def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return round(numerator / denominator, 3)


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def goal(value: float | None, target: float, *, at_least: bool, text: str) -> dict[str, Any]:
    """A goal from the issue and where this run stands against it."""
    met = None if value is None else (value >= target if at_least else value <= target)
    return {"goal": text, "value": value, "target": target, "met": met}


# -- event loop ---------------------------------------------------------------------------------
def run_async(coroutine: Any, loop: str = "asyncio") -> Any:
    """asyncio.run, or on uvloop when asked (uvloop is not a dependency: install it to try)."""
    import asyncio

    if loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise SystemExit(
                "--loop uvloop: uvloop is not installed (pip install uvloop)"
            ) from None
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coroutine)
    return asyncio.run(coroutine)


# -- command line -------------------------------------------------------------------------------
def parser(name: str, description: str) -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(prog=f"python -m benchmarks {name}", description=description)
    result.add_argument("--json", action="store_true", help="print one JSON object")
    return result


def emit(result: dict[str, Any], as_json: bool) -> None:
    """One JSON object on stdout (one line), or the same keys as readable lines."""
    if as_json:
        print(json.dumps(result, default=str), flush=True)
        return
    for key, value in result.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for inner, item in value.items():
                print(f"  {inner}: {json.dumps(item, default=str)}")
        else:
            print(f"{key}: {json.dumps(value, default=str)}")
    sys.stdout.flush()


def exit_code(result: dict[str, Any]) -> int:
    """Failures (not missed goals) make a benchmark exit non-zero."""
    return 1 if result.get("failures") else 0
