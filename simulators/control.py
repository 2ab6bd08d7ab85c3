"""A small local control interface for a running fleet: JSON lines over TCP.

One request per line, one answer per line:
    {"op": "press_button", "meter": "SIM0000000003"}
    -> {"ok": true, "result": {"source": "manual", "after": "connected", ...}}
Errors come back as {"ok": false, "error": "..."} and leave the connection open. `meter` is a
0-based index or a serial number; fault operations without `meter` apply to the whole fleet.
It listens on 127.0.0.1 by default: there is no authentication, so never expose it.

Operations: status, stats (per meter: sessions, max_concurrent_sessions), meter, relay,
press_button, manual_disconnect, local_disconnect, local_reconnect, power_fail {duration_s?},
open_cover, close_cover, pushes, set_control_mode {mode}, get_value {obis}, set_value {obis, value},
clear_value {obis?}, faults, set_faults {faults: {...}}, clear_faults, offline {for_s?},
online. `python -m simulators.control --port P '{"op": "status"}'` sends one request."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Callable
from typing import Any

from simulators.fleet import Fleet

MAX_LINE = 1 << 16
MAX_ANSWER = 1 << 26  # an answer about every meter (stats of 100,000 meters) is one line
IDLE_TIMEOUT_S = 600.0
REQUEST_TIMEOUT_S = 10.0


class ControlError(Exception):
    """The fleet refused a control request; the message says why."""


def _meter(request: dict[str, Any]) -> int | str:
    key = request.get("meter")
    if not isinstance(key, int | str) or isinstance(key, bool):
        raise ControlError("this operation needs 'meter' (index or serial number)")
    return key


def _optional_meter(request: dict[str, Any]) -> int | str | None:
    return None if request.get("meter") is None else _meter(request)


def _value(raw: Any) -> Any:
    """JSON has no bytes: {"hex": "..."} stands for an octet string."""
    if isinstance(raw, dict) and set(raw) == {"hex"} and isinstance(raw["hex"], str):
        return bytes.fromhex(raw["hex"])
    return raw


def _need(request: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = request.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ControlError(f"this operation needs '{name}'")
    return value


Handler = Callable[[Fleet, dict[str, Any]], Any]

_HANDLERS: dict[str, Handler] = {
    "status": lambda fleet, r: fleet.status(),
    "stats": lambda fleet, r: fleet.stats(),
    "meter": lambda fleet, r: fleet.meter_status(_meter(r)),
    "relay": lambda fleet, r: fleet.relay(_meter(r)),
    "press_button": lambda fleet, r: fleet.press_button(_meter(r)),
    "manual_disconnect": lambda fleet, r: fleet.manual_disconnect(_meter(r)),
    "local_disconnect": lambda fleet, r: fleet.local_disconnect(_meter(r)),
    "local_reconnect": lambda fleet, r: fleet.local_reconnect(_meter(r)),
    "power_fail": lambda fleet, r: fleet.power_fail(_meter(r), _optional_duration(r)),
    "open_cover": lambda fleet, r: fleet.open_cover(_meter(r)),
    "close_cover": lambda fleet, r: fleet.close_cover(_meter(r)),
    "pushes": lambda fleet, r: fleet.pushes(_meter(r)),
    "set_control_mode": lambda fleet, r: fleet.set_control_mode(_meter(r), _need(r, "mode", int)),
    "get_value": lambda fleet, r: _jsonable(fleet.get_value(_meter(r), _need(r, "obis", str))),
    "set_value": lambda fleet, r: fleet.set_value(
        _meter(r), _need(r, "obis", str), _value(r.get("value"))
    ),
    "clear_value": lambda fleet, r: fleet.clear_value(_meter(r), r.get("obis")),
    "faults": lambda fleet, r: fleet.faults(_meter(r)),
    "set_faults": lambda fleet, r: {
        "changed": fleet.set_faults(_optional_meter(r), **_need(r, "faults", dict))
    },
    "clear_faults": lambda fleet, r: {"changed": fleet.clear_faults(_optional_meter(r))},
    "offline": lambda fleet, r: {
        "changed": fleet.go_offline(_optional_meter(r), _optional_seconds(r))
    },
    "online": lambda fleet, r: {"changed": fleet.go_online(_optional_meter(r))},
}
OPERATIONS = tuple(sorted(_HANDLERS))


def _optional_seconds(request: dict[str, Any]) -> float | None:
    value = request.get("for_s")
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ControlError("'for_s' must be a positive number of seconds")
    return float(value)


def _optional_duration(request: dict[str, Any]) -> float | None:
    value = request.get("duration_s")
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ControlError("'duration_s' must be a positive number of seconds")
    return float(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"hex": value.hex()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)


def execute(fleet: Fleet, request: Any) -> dict[str, Any]:
    """Run one request against the fleet; never raises (errors become the answer)."""
    if not isinstance(request, dict):
        return {"ok": False, "error": "a request is a JSON object with an 'op'"}
    op = request.get("op")
    handler = _HANDLERS.get(op) if isinstance(op, str) else None
    if handler is None:
        return {"ok": False, "error": f"unknown op {op!r}; known: {', '.join(OPERATIONS)}"}
    try:
        result = handler(fleet, request)
    except KeyError as exc:
        return {"ok": False, "error": str(exc.args[0]) if exc.args else "not found"}
    except (ControlError, ValueError, TypeError) as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": True, "result": _jsonable(result)}


class ControlServer:
    """Serves `execute` over TCP, one JSON object per line."""

    def __init__(self, fleet: Fleet, host: str = "127.0.0.1", port: int = 0) -> None:
        self.fleet = fleet
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_LINE)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        try:
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), IDLE_TIMEOUT_S)
                except (TimeoutError, ValueError, ConnectionError):
                    break  # idle, over-long line, or the peer went away
                if not line:
                    break
                if not line.strip():
                    continue
                try:
                    request = json.loads(line)
                except json.JSONDecodeError as exc:
                    answer: dict[str, Any] = {"ok": False, "error": f"bad JSON: {exc.msg}"}
                else:
                    answer = execute(self.fleet, request)
                writer.write(json.dumps(answer).encode() + b"\n")
                try:
                    await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT_S)
                except (TimeoutError, ConnectionError):
                    break
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)


class ControlClient:
    """The client side, for tests and scripts: `await client.call("relay", meter=3)`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, timeout: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, limit=MAX_ANSWER), self.timeout
        )

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer.wait_closed(), 1.0)
            self._writer = self._reader = None

    async def __aenter__(self) -> ControlClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def request(self, request: dict[str, Any]) -> dict[str, Any]:
        """The raw answer ({"ok": ..., ...})."""
        if self._reader is None or self._writer is None:
            await self.connect()
        assert self._reader is not None and self._writer is not None
        self._writer.write(json.dumps(request).encode() + b"\n")
        await asyncio.wait_for(self._writer.drain(), self.timeout)
        line = await asyncio.wait_for(self._reader.readline(), self.timeout)
        if not line:
            raise ConnectionError("control connection closed")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def call(self, op: str, **arguments: Any) -> Any:
        """The result of one operation; ControlError when the fleet refuses it."""
        answer = await self.request({"op": op, **arguments})
        if not answer.get("ok"):
            raise ControlError(answer.get("error", "request failed"))
        return answer.get("result")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.control", description="Send control requests to dlms-sim."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="dlms-sim --control-port")
    parser.add_argument("request", nargs="+", help='JSON request, e.g. \'{"op": "status"}\'')
    args = parser.parse_args(argv)

    async def run() -> int:
        status = 0
        async with ControlClient(args.host, args.port) as client:
            for text in args.request:
                try:
                    request = json.loads(text)
                except json.JSONDecodeError as exc:
                    print(f"bad JSON {text!r}: {exc.msg}", file=sys.stderr)
                    return 2
                answer = await client.request(request)
                print(json.dumps(answer), flush=True)
                status = status or (0 if answer.get("ok") else 1)
        return status

    try:
        return asyncio.run(run())
    except (OSError, TimeoutError) as exc:
        print(f"cannot reach the control port: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
