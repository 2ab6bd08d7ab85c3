"""`python -m benchmarks all [--quick] [--only a,b] [--json] [--out FILE]`: every benchmark.

Each runs in its own process (`python -m benchmarks <name> ...`), so one's CPU, memory and
open sockets never colour the next, and a crash is reported instead of ending the suite.
The summary lists every goal from the issue with this run's value beside it."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._common import machine


@dataclass(frozen=True)
class Entry:
    name: str
    full: tuple[str, ...]  # the sizes of the issue
    quick: tuple[str, ...]  # a smoke-sized run
    json_flag: bool = True  # sim-startup prints JSON without being asked


SUITE = (
    Entry("session-cpu", (), ("--min-s", "0.1")),
    Entry("storage-ingest", ("--rows", "200000"), ("--rows", "2000", "--meters", "50")),
    Entry("inventory-scale", ("--meters", "100000"), ("--meters", "200", "--idle-s", "1")),
    Entry("load-profile", ("--days", "35"), ("--days", "1")),
    Entry("fleet", ("--meters", "10000", "--latency-ms", "100"), ("--meters", "20")),
    Entry("fleet-hdlc", ("--meters", "10000", "--latency-ms", "100"), ("--meters", "20")),
    Entry(
        "relay-latency",
        ("--events", "1000", "--meters", "10000"),
        ("--meters", "30", "--events", "10", "--latency-ms", "5", "--poll-rate", "5"),
    ),
    Entry(
        "billing-batch",
        ("--meters", "10000", "--events", "10000", "--payments", "100"),
        ("--meters", "30", "--events", "20", "--payments", "5", "--latency-ms", "5"),
    ),
    Entry("sim-startup", ("--meters", "10000"), ("--meters", "20", "--idle-s", "0.5"), False),
    Entry(
        "cluster",
        ("--meters", "10000", "--members", "1,2"),
        ("--meters", "40", "--demand", "20", "--window", "3", "--lease-s", "2", "--warmup", "10"),
    ),
)


def goals(value: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every {"goal", "value", "target", "met"} object inside a result, with where it sits."""
    if isinstance(value, dict):
        if {"goal", "target", "met"} <= value.keys():
            yield path, value
            return
        for key, inner in value.items():
            yield from goals(inner, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from goals(inner, f"{path}[{index}]")


def run_one(entry: Entry, quick: bool, timeout: float) -> dict[str, Any]:
    argv = [sys.executable, "-m", "benchmarks", entry.name, *(entry.quick if quick else entry.full)]
    if entry.json_flag:
        argv.append("--json")
    began = time.monotonic()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"benchmark": entry.name, "error": f"timed out after {timeout:.0f} s"}
    elapsed = round(time.monotonic() - began, 1)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            try:
                result: dict[str, Any] = json.loads(line)
            except json.JSONDecodeError:
                break
            result.setdefault("benchmark", entry.name)
            result["exit_code"] = done.returncode
            result["elapsed_s"] = elapsed
            result["command"] = " ".join(["python -m benchmarks", *argv[3:]])
            return result
    tail = (done.stderr or done.stdout).strip().splitlines()[-15:]
    return {
        "benchmark": entry.name,
        "exit_code": done.returncode,
        "error": "no JSON result",
        "stderr_tail": tail,
    }


def summary_lines(results: list[dict[str, Any]]) -> list[str]:
    lines = []
    for result in results:
        name = result.get("benchmark", "?")
        if "error" in result:
            lines.append(f"{name}: ERROR {result['error']}")
            for text in result.get("stderr_tail", []):
                lines.append(f"    {text}")
            continue
        failures = result.get("failures")
        lines.append(
            f"{name}: exit {result.get('exit_code')}, failures {failures}, "
            f"{result.get('elapsed_s')} s  [{result.get('command')}]"
        )
        for where, item in goals(result):
            met = {True: "MET", False: "MISSED", None: "n/a"}[item.get("met")]
            lines.append(f"    {met:6} {item['goal']}: {item.get('value')}  ({where})")
    return lines


def main(argv: list[str]) -> int:
    cli = argparse.ArgumentParser(prog="python -m benchmarks all")
    cli.add_argument("--quick", action="store_true", help="tiny sizes: proves the harness works")
    cli.add_argument("--only", help="comma list of benchmark names")
    cli.add_argument("--skip", default="", help="comma list of benchmark names to leave out")
    cli.add_argument("--json", action="store_true", help="print one JSON object")
    cli.add_argument("--out", type=Path, help="also write the JSON result here")
    cli.add_argument("--timeout", type=float, default=1800.0, help="per benchmark, seconds")
    args = cli.parse_args(argv)
    from benchmarks.__main__ import available

    started = machine()
    present = set(available())
    wanted = {n.strip() for n in args.only.split(",")} if args.only else None
    skipped = {n.strip() for n in args.skip.split(",") if n.strip()}
    results: list[dict[str, Any]] = []
    for entry in SUITE:
        if wanted is not None and entry.name not in wanted:
            continue
        if entry.name in skipped:
            continue
        if entry.name not in present:
            results.append({"benchmark": entry.name, "error": "not built yet"})
            continue
        if not args.json:
            print(f"running {entry.name} ...", file=sys.stderr, flush=True)
        results.append(run_one(entry, args.quick, args.timeout))
    finished = machine()
    started["load_avg_1m_end"] = finished["load_avg_1m"]
    started["finished"] = finished["date"]
    report = {"machine": started, "quick": args.quick, "results": results}
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    if args.json:
        print(json.dumps(report, default=str), flush=True)
    else:
        print(json.dumps(report["machine"]))
        print("\n".join(summary_lines(results)), flush=True)
    broken = [
        r for r in results if ("error" in r and r["error"] != "not built yet") or r.get("exit_code")
    ]
    return 1 if broken else 0
