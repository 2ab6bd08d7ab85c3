"""What every `headend` sub-command shares: finding and loading the config file, opening the
database, and failing with one clear line (and an exit code) instead of a traceback."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, NoReturn

import structlog
import typer
from rich.console import Console

from headend.config import CONFIG_ENV, Config, ConfigError, load_config
from headend.observability.logs import configure_logging

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "EXIT_CONFIG",
    "ConfigOpt",
    "DebugOpt",
    "JsonOpt",
    "config_path",
    "configure_cli_logging",
    "fail",
    "load_cli_config",
]

DEFAULT_CONFIG_FILE = Path("headend.toml")
EXIT_CONFIG = 2  # bad config, bad input file, bad usage

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help=f"Config file (TOML). Default: ${CONFIG_ENV}, else ./headend.toml if present.",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
DebugOpt = Annotated[
    bool,
    typer.Option(
        "--debug",
        help="Log the protocol trail on stderr (APDUs, invoke ids, invocation counters, HDLC "
        "frames, timings; never keys).",
    ),
]


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr, then exit with `code`."""
    Console(stderr=True, highlight=False).print(f"[red]error:[/red] {message}", markup=True)
    raise typer.Exit(code)


def config_path(option: Path | None, ctx: typer.Context | None = None) -> Path | None:
    """The config file to use: the command's --config, the top-level --config, $HEADEND_CONFIG,
    ./headend.toml if it exists, else none (defaults)."""
    if option is not None:
        return option
    if ctx is not None:
        root = ctx.find_root()
        if isinstance(root.obj, dict) and root.obj.get("config") is not None:
            return Path(root.obj["config"])
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def load_cli_config(option: Path | None, ctx: typer.Context | None = None) -> Config:
    """Load the config or exit 2 with a message naming the bad key."""
    try:
        return load_config(config_path(option, ctx))
    except ConfigError as exc:
        fail(f"config: {exc}", EXIT_CONFIG)


def configure_cli_logging(level: str = "WARNING") -> None:
    """Readable logs on stderr (stdout stays for tables and JSON), unless something (the
    daemon) configured logging already: the same processors as the daemon's
    (headend/observability/logs.py), rendered for a terminal."""
    if structlog.is_configured() and level == "WARNING":
        return
    configure_logging(level, "console")
