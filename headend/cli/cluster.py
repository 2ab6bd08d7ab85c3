"""The cluster's part of the command line: `headend run --workers N` (cluster/workers.py) and
the members table of `headend status` (cluster/members.py)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from headend.cli.common import EXIT_CONFIG, fail
from headend.config import Config

__all__ = ["cluster_status", "print_cluster", "run_members"]


def run_members(config: Config, workers: int, path: Path | None) -> int:
    """N members of the cluster on this host, until SIGTERM / Ctrl-C."""
    from headend.cluster.workers import run_workers

    if not config.cluster.enabled:
        fail("--workers starts cluster members: set cluster.enabled = true", EXIT_CONFIG)
    # Stable ids (not the parent's pid): a member started again under the same id gets back
    # the balance events its broker session kept for it.
    base = config.cluster.instance_id or socket.gethostname()
    try:
        return asyncio.run(run_workers(workers, base_id=base, config=path))
    except KeyboardInterrupt:
        return 130


def cluster_status(config: Config) -> dict[str, Any]:
    from headend.cluster.members import cluster_report
    from headend.storage import Database

    async def report() -> dict[str, Any]:
        db = await Database.open(config.database.url, run_migrations=False)
        try:
            return await cluster_report(db, config.cluster.lease_s)
        finally:
            await db.dispose()

    return asyncio.run(report())


def print_cluster(console: Console, report: dict[str, Any]) -> None:
    table = Table("member", "host", "pid", "alive", "leases", "serial lines", "load", "heartbeat")
    for m in report["members"]:
        load = m["load"]
        table.add_row(
            m["instance_id"],
            m["host"],
            str(m["pid"]),
            "yes" if m["alive"] else "no",
            str(m["leases"]),
            ", ".join(m["lines"]) or "-",
            f"{load.get('meters', 0)} meters, {load.get('polls_running', 0)} polls, "
            f"{load.get('relay_workers', 0)} relay, {load.get('polls_ok', 0)} ok",
            m["heartbeat_at"] or "-",
        )
    console.print(table)
    unheld = report["unheld_leases"]
    console.print(f"[bold]leases[/bold] {report['leases']}, unheld {len(unheld)}")
