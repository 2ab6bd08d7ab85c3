"""Logging for the daemon (JSON lines) and the CLI (readable console lines), with structlog.

One chain of processors serves both the head-end's structlog loggers and the stdlib loggers of
the libraries (and of `drivers`, which stay on the stdlib so that they print nothing unless
someone configures logging): structlog hands its events to a stdlib handler whose
`ProcessorFormatter` runs the same processors on foreign records, so every line has the same
fields and passes the same redaction (redaction.py) whoever wrote it.

Per-task context: `meter_id`, `command_id`, `event_id` and `instance_id` are bound with
structlog.contextvars where the work for one of them starts (a poll's task, a relay worker,
the balance event in hand, the daemon). asyncio gives each task a copy of the context it was
created in, so what one task binds is never seen by another, and every line that task (and the
tasks it starts) writes carries them as fields, stdlib records included.

DEBUG adds the protocol trail (drivers/trail.py: APDU kinds, invoke ids, invocation counters,
HDLC frame kinds, timings); the chattiest libraries (SQL statements, MQTT packets, the
embedded broker) stay at WARNING whatever the level, since their DEBUG says nothing a field
engineer needs and SQLAlchemy's would print every statement's parameters."""

from __future__ import annotations

import logging
import os
import socket
import sys
from typing import IO, Any

import structlog

from headend.observability.redaction import redact

__all__ = ["QUIET_LIBRARIES", "configure_logging", "get_logger", "instance_id"]

QUIET_LIBRARIES = (
    "amqtt",
    "transitions",
    "aiosqlite",
    "asyncio",
    "sqlalchemy",
    "aiomqtt",
    "asyncpg",
    "alembic.runtime.plugins",  # a line per plugin on every start
)


def instance_id(configured: str = "") -> str:
    """This process's name in logs and in a cluster: the configured one, else hostname-pid."""
    return configured or f"{socket.gethostname()}-{os.getpid()}"


def _shared() -> list[Any]:
    """What every event gets, structlog's own or a stdlib record's."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.processors.StackInfoRenderer(),
    ]


def get_logger(name: str) -> Any:
    """The head-end's logger for module `name`: a structlog BoundLogger over the stdlib logger
    of that name, with the shared processors fixed here rather than taken from structlog's
    global configuration. Unconfigured (a test, a program using a module as a library), its
    lines go where the stdlib's would (nowhere below WARNING) instead of structlog's default
    of printing to stdout, which would mix log lines into a program's output."""
    return structlog.wrap_logger(
        logging.getLogger(name),
        wrapper_class=structlog.stdlib.BoundLogger,
        processors=[
            structlog.stdlib.filter_by_level,  # before any work for a line nobody wants
            *_shared(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
    )


def configure_logging(
    level: str = "INFO",
    fmt: str = "json",
    *,
    stream: IO[str] | None = None,
    handler: logging.Handler | None = None,
) -> logging.Handler:
    """Route structlog and the stdlib root logger to one handler (a stream on stderr unless
    `handler` or `stream` is given) with JSON lines (`fmt="json"`) or console lines. Replaces
    any earlier configuration: the last call wins. Returns the handler."""
    level = level.upper()
    shared = _shared()
    renderer: Any = (
        structlog.processors.JSONRenderer(default=str)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,  # text, so that redaction reads it too
            redact,
            renderer,
        ],
    )
    if handler is None:
        handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
        if existing is not handler:
            existing.close()
    root.addHandler(handler)
    root.setLevel(level)
    quiet = max(logging.WARNING, logging.getLevelName(level))
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(quiet)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,  # before any work for a line nobody wants
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    return handler
