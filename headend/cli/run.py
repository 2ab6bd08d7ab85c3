"""`headend run` (the daemon), `headend status` (fleet summary, pending commands, alarms) and
`headend demo` (everything local, with a live view)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from headend.cli.common import (
    EXIT_CONFIG,
    ConfigOpt,
    JsonOpt,
    config_path,
    fail,
    load_cli_config,
)
from headend.config import ConfigError
from headend.meters.secrets import SecretsError
from headend.status import status_report

__all__ = ["demo", "run", "status"]


def run(
    ctx: typer.Context,
    config: ConfigOpt = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=0,
            help="Start N cluster members on this host, one process each (needs [cluster] "
            "enabled). Default: this process is the head-end.",
        ),
    ] = 0,
) -> None:
    """Run the collection daemon until SIGTERM / Ctrl-C."""
    from drivers.event_loop import run as run_loop
    from headend.daemon import configure_daemon_logging, run_daemon

    cfg = load_cli_config(config, ctx)
    configure_daemon_logging(cfg.logging)
    if workers:
        from headend.cli.cluster import run_members

        raise typer.Exit(run_members(cfg, workers, config_path(config, ctx)))
    try:
        run_loop(run_daemon(cfg))  # on uvloop where it is installed
    except SecretsError as exc:
        fail(str(exc), EXIT_CONFIG)
    except ConfigError as exc:
        fail(f"config: {exc}", EXIT_CONFIG)
    except KeyboardInterrupt:  # a second Ctrl-C while stopping
        raise typer.Exit(130) from None
    except (OSError, RuntimeError) as exc:
        fail(f"head-end: {exc}", 1)


def status(ctx: typer.Context, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Fleet summary, pending relay commands, operators' holds and active alarms (from the
    database)."""
    cfg = load_cli_config(config, ctx)
    try:
        # Not read for three polling intervals (and at least ten minutes): silent.
        stale_after_s = max(600.0, 3 * cfg.polling.interval_s)
        report = asyncio.run(status_report(cfg.database.url, stale_after_s=stale_after_s))
        if cfg.cluster.enabled:
            from headend.cli.cluster import cluster_status

            report["cluster"] = cluster_status(cfg)
    except OSError as exc:
        fail(f"database {cfg.database.display_url}: {exc}", 1)
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
        return
    console = Console(highlight=False)
    states = ", ".join(f"{k} {v}" for k, v in sorted(report["relay_states"].items())) or "-"
    console.print(
        f"[bold]meters[/bold] {report['meters']}   [bold]relays[/bold] {states}   "
        f"[bold]desired disconnected[/bold] {report['desired_disconnected']}"
    )
    console.print(
        f"[bold]active commands[/bold] {report['active_commands']} "
        f"({report['escalated_commands']} escalated)   "
        f"[bold]active alarms[/bold] {report['active_alarms']}   "
        f"[bold]last reading[/bold] {report['last_reading_at'] or '-'}   "
        f"[bold]outbox[/bold] {report['outbox']['depth']} waiting"
        + (f" since {report['outbox']['oldest']}" if report["outbox"]["oldest"] else "")
    )
    if "cluster" in report:
        from headend.cli.cluster import print_cluster

        print_cluster(console, report["cluster"])
    _table(
        console,
        ("meter", "action", "status", "attempt", "source", "created", "last error"),
        (
            (
                c["meter_id"],
                c["action"],
                c["status"],
                str(c["attempt"]),
                c["source"],
                c["created_at"] or "-",
                (c["last_error"] or "")[:60],
            )
            for c in report["pending_commands"]
        ),
    )
    _table(
        console,
        ("held meter", "held", "since", "reason", "balance says"),
        (
            (
                h["meter_id"],
                h["held_state"] or "-",
                h["since"] or "-",
                (h["reason"] or "")[:50],
                h["desired_state"] or "-",
            )
            for h in report["holds"]
        ),
    )
    _table(
        console,
        ("protected meter", "since", "reason", "balance"),
        (
            (p["meter_id"], p["since"] or "-", (p["reason"] or "")[:50], p["balance"] or "-")
            for p in report["protected"]
        ),
    )
    _table(
        console,
        ("alarm", "meter", "when", "detail"),
        (
            (a["type"], a["meter_id"] or "-", a["ts"] or "-", (a["detail"] or "")[:70])
            for a in report["alarms"]
        ),
    )
    print_worst(console, report["worst"])


def print_worst(console: Console, worst: dict[str, list[dict[str, Any]]]) -> None:
    """The meters behind the fleet-wide metrics (storage/offenders.py), worst first."""
    _table(
        console,
        ("silent meter", "last reading", "why (unreachable alarm)"),
        (
            (r["meter_id"], r["last_reading_at"] or "never", (r["unreachable"] or "")[:70])
            for r in worst["silent"]
        ),
    )
    _table(
        console,
        ("stuck command", "action", "attempts", "since", "last error"),
        (
            (
                r["meter_id"],
                r["action"],
                str(r["attempt"]),
                r["since"] or "-",
                (r["last_error"] or "")[:60],
            )
            for r in worst["stuck_commands"]
        ),
    )
    _table(
        console,
        ("invocation counter", "key", "used", "headroom", "% used"),
        (
            (
                r["meter_id"],
                r["key_id"],
                str(r["used"]),
                str(r["headroom"]),
                f"{r['used_percent']:g}",
            )
            for r in worst["counters"]
        ),
    )
    _table(
        console,
        ("most alarms", "active", "types"),
        (
            (r["meter_id"], str(r["active_alarms"]), ", ".join(r["types"]))
            for r in worst["alarming"]
        ),
    )


def _table(console: Console, headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """One status table, printed only when it has rows."""
    table = Table(*headers)
    for row in rows:
        table.add_row(*row)
    if table.row_count:
        console.print(table)


def demo(
    meters: Annotated[int, typer.Option("--meters", min=2, max=200, help="Simulated meters.")] = 6,
    duration: Annotated[
        float | None,
        typer.Option(
            "--duration",
            min=5.0,
            help="Run the scripted billing feed for S seconds, print a plain-text log and a "
            "summary, then exit (non-interactive; for CI). Default: live view until Ctrl-C.",
        ),
    ] = None,
    workdir: Annotated[
        Path | None,
        typer.Option("--workdir", help="Keep the database and inventory here (default: temp)."),
    ] = None,
) -> None:
    """Simulator fleet + embedded MQTT broker + SQLite + head-end + a sample billing feed."""
    from headend.demo import run_demo

    try:
        ok = asyncio.run(run_demo(meters=meters, duration=duration, workdir=workdir))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    raise typer.Exit(0 if ok else 1)
