"""/metrics, /healthz and /readyz on one plain HTTP port ([metrics] host/port).

Served on the daemon's own event loop (asyncio.start_server), not in prometheus_client's
threaded WSGI server: readiness asks the daemon's database engine and its bridge, and the
stored-fact gauges are read through that engine at scrape (fleet.py); both live on this loop,
so a thread would have to hop back onto it for every request anyway. The protocol needed is
tiny (a GET, a status line, a body, close) and is read under bounds: the request head is at
most 8 KiB and must arrive within a few seconds, so a stuck or hostile client costs one
small task. The exposition itself is prometheus_client's (`generate_latest`).

- `/healthz`: 200 while the process's event loop answers (liveness: a wedged loop fails it).
- `/readyz`: 200 when every readiness check passes, else 503 with the reasons, one a line.
- `/metrics`: the registry in Prometheus text format, the stored-fact gauges refreshed first."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from types import TracebackType

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from headend.observability import metrics
from headend.observability.logs import get_logger

__all__ = ["OpsServer", "Readiness"]

log = get_logger(__name__)

Readiness = Callable[[], Awaitable[list[str]]]
"""Returns why the daemon is not ready (empty: ready)."""

MAX_HEAD = 8192
READ_TIMEOUT_S = 5.0
REFRESH_TIMEOUT_S = 5.0
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            503: "Service Unavailable"}  # fmt: skip


class OpsServer:
    """`async with OpsServer(host, port, readiness=..., refresh=...) as server:` serves until
    the block ends; `server.url` is where (port 0: a free one)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        readiness: Readiness,
        refresh: Callable[[], Awaitable[None]] | None = None,
        registry: CollectorRegistry = metrics.REGISTRY,
    ) -> None:
        self.host = host
        self.port = port
        self.readiness = readiness
        self.refresh = refresh
        self.registry = registry
        self._server: asyncio.Server | None = None

    def __repr__(self) -> str:
        return f"OpsServer({self.host}:{self.port})"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def __aenter__(self) -> OpsServer:
        self._server = await asyncio.start_server(
            self._client, self.host, self.port, limit=MAX_HEAD
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("metrics and health endpoints on %s", self.url)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._server.wait_closed()
            self._server = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, content_type, body = await self._answer(reader)
            head = (
                f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
                f"Content-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n"
                "Cache-Control: no-store\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(head.encode("ascii") + body)
            async with asyncio.timeout(READ_TIMEOUT_S):
                await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away or dawdled: nothing to answer
        except Exception:
            log.exception("metrics endpoint: request failed")  # the server itself goes on
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(READ_TIMEOUT_S):
                    await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[int, str, bytes]:
        async with asyncio.timeout(READ_TIMEOUT_S):
            head = await reader.readuntil(b"\r\n\r\n")
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return 400, "text/plain; charset=utf-8", b"bad request\n"
        method, target = parts[0], parts[1]
        if method != "GET":
            return 405, "text/plain; charset=utf-8", b"GET only\n"
        path = target.split("?", 1)[0]
        text = "text/plain; charset=utf-8"
        if path == "/healthz":
            return 200, text, b"ok\n"
        if path == "/readyz":
            reasons = await self.readiness()
            if reasons:
                return 503, text, ("not ready: " + "\n".join(reasons) + "\n").encode()
            return 200, text, b"ready\n"
        if path == "/metrics":
            await self._refresh()
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        return 404, text, b"not found: /metrics, /healthz, /readyz\n"

    async def _refresh(self) -> None:
        """Stored-fact gauges first; if the database does not answer in time, the scrape
        still gets everything else (and the previous values of those gauges)."""
        if self.refresh is None:
            return
        try:
            async with asyncio.timeout(REFRESH_TIMEOUT_S):
                await self.refresh()
        except Exception as exc:
            log.warning("metrics: stored-fact gauges not refreshed: %s", exc)
