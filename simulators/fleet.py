"""A running fleet of simulated meters, and the Python control API over it.

`Fleet` owns the meters, their TCP listeners and serial lines; the control interface
(simulators/control.py) and tests call its methods to press buttons, force values, switch
faults and inspect relay history while clients talk to the meters. `run_fleet` is the
one-call way to get a started fleet in a test: meters on ephemeral ports, stopped on exit."""

from __future__ import annotations

import asyncio
import dataclasses
import resource
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from cosem_objects.data import Data
from drivers.inventory_columns import SECRET_FIELDS
from simulators.config import Faults, MeterConfig, PushSpec
from simulators.faults_runtime import FleetClock
from simulators.fleet_spec import (
    FleetSpec,
    SerialSpec,
    build_configs,
    coerce_faults,
    load_fleet_file,
    serial_groups,
)
from simulators.inventory import InventoryRow, write_inventory
from simulators.meter import SimMeter
from simulators.meter_runtime import MeterRuntime
from simulators.objects import services
from simulators.push_agent import PushAgent, start_push_agents, stop_push_agents
from simulators.serial_lines import SerialLine, open_lines
from simulators.servers import DEFAULT_IDLE_TIMEOUT_S, close_servers, start_tcp_servers

FD_MARGIN = 256  # stdio, the control port, client connections, log files, ...

MeterKey = int | str  # 0-based index or meter_id (serial number)


class FleetError(RuntimeError):
    """The fleet cannot run as asked (e.g. the file descriptor limit is too low)."""


def raise_fd_limit(needed: int) -> int:
    """Lift the soft RLIMIT_NOFILE towards `needed` (never above the hard limit).

    Returns the soft limit now in force; raises FleetError when even the hard limit is lower
    than `needed`, saying how to fix it, rather than failing half-way through start-up."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise FleetError(
            f"this fleet needs about {needed} file descriptors but the hard limit is {hard}; "
            f"raise it (e.g. `ulimit -Hn {needed}` as root, LimitNOFILE= in a systemd unit, "
            "or nofile in /etc/security/limits.conf) or run fewer meters"
        )
    return int(soft)


class Fleet:
    """Meters from `configs`, served once `start()` returns (or inside `async with`)."""

    def __init__(
        self,
        configs: Iterable[MeterConfig],
        *,
        serial: SerialSpec | None = None,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.configs = list(configs)
        if not self.configs:
            raise ValueError("a fleet needs at least one meter")
        self.serial = serial or SerialSpec()
        self.idle_timeout_s = idle_timeout_s
        self._wall_clock = clock
        self.clock = FleetClock()
        self.meters: list[SimMeter] = []
        self.runtimes: list[MeterRuntime] = []
        self.lines: list[SerialLine] = []
        self._servers: list[asyncio.Server] = []
        self._serial_paths: dict[int, str] = {}
        self._by_id = {config.meter_id: config.index for config in self.configs}
        self._positions = {config.index: position for position, config in enumerate(self.configs)}
        self._live: set[asyncio.Transport] = set()
        self.push_agents: list[PushAgent] = []
        self._push_task: asyncio.Task[None] | None = None
        self.started = False

    # -- life cycle --------------------------------------------------------------------------
    async def start(self) -> None:
        if self.started:
            return
        tcp = [
            config
            for config in self.configs
            if config.transport != "serial" and not (config.push and config.push.inbound_only)
        ]
        groups = serial_groups(self.configs, self.serial.meters_per_line)
        raise_fd_limit(len(tcp) + 2 * len(groups) + FD_MARGIN)
        self.clock = FleetClock()
        self.meters = [SimMeter(config, self._wall_clock) for config in self.configs]
        self.runtimes = [
            MeterRuntime(config, meter, self.clock, self._live)
            for config, meter in zip(self.configs, self.meters, strict=True)
        ]
        by_index = {runtime.config.index: runtime for runtime in self.runtimes}
        try:
            self._servers = await start_tcp_servers(
                [by_index[config.index] for config in tcp], idle_timeout_s=self.idle_timeout_s
            )
            self.lines = open_lines(
                [[by_index[config.index] for config in group] for group in groups],
                baud=self.serial.baud,
                pace=self.serial.pace,
                mode_e=self.serial.mode_e,
            )
        except BaseException:
            await self._shutdown()
            raise
        for line in self.lines:
            for runtime in line.runtimes:
                self._serial_paths[runtime.config.index] = line.path
        self.push_agents = [
            PushAgent(runtime, runtime.config.push, idle_timeout_s=self.idle_timeout_s)
            for runtime in self.runtimes
            if runtime.config.push is not None
        ]
        self._push_task = start_push_agents(self.push_agents)
        self.started = True

    async def stop(self) -> None:
        if self.started:
            await self._shutdown()
            self.started = False

    async def _shutdown(self) -> None:
        push_task, self._push_task = self._push_task, None
        await stop_push_agents(push_task)
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        for transport in list(self._live):
            transport.abort()
        self._live.clear()
        await close_servers(servers)
        for line in self.lines:
            line.close()
        self.lines = []
        self._serial_paths.clear()

    async def __aenter__(self) -> Fleet:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- lookup ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.configs)

    def index_of(self, key: MeterKey) -> int:
        if isinstance(key, bool):
            raise KeyError(f"no meter {key!r}")
        if isinstance(key, int):
            if key not in self._positions:
                raise KeyError(f"no meter with index {key}")
            return key
        if key in self._by_id:
            return self._by_id[key]
        if isinstance(key, str) and key.isdigit() and int(key) in self._positions:
            return int(key)
        raise KeyError(f"no meter {key!r}")

    def config(self, key: MeterKey) -> MeterConfig:
        return self.configs[self._positions[self.index_of(key)]]

    def meter(self, key: MeterKey) -> SimMeter:
        self._require_started()
        return self.meters[self._positions[self.index_of(key)]]

    def runtime(self, key: MeterKey) -> MeterRuntime:
        self._require_started()
        return self.runtimes[self._positions[self.index_of(key)]]

    @property
    def ports(self) -> list[int]:
        """Listening port of every meter in order (0 for serial meters)."""
        return [0 if c.transport == "serial" else c.port for c in self.configs]

    def serial_path(self, key: MeterKey) -> str | None:
        return self._serial_paths.get(self.index_of(key))

    @property
    def serial_paths(self) -> list[str]:
        """Device path of every serial line, in line order."""
        return [line.path for line in self.lines]

    def row(self, key: MeterKey) -> InventoryRow:
        config = self.config(key)
        return InventoryRow.for_meter(
            config, serial_port=self._serial_paths.get(config.index), baud=self.serial.baud
        )

    def rows(self) -> list[InventoryRow]:
        return [self.row(config.index) for config in self.configs]

    def connection_kwargs(self, key: MeterKey) -> dict[str, object]:
        """Keyword arguments for drivers.connect.MeterConnection to reach this meter."""
        return self.row(key).connection_kwargs()

    def write_inventory(self, path: str | Path) -> None:
        write_inventory(path, self.rows())

    def _require_started(self) -> None:
        if not self.started:
            raise FleetError("the fleet is not running; call start() first")

    # -- control API ---------------------------------------------------------------------------
    def press_button(self, key: MeterKey) -> dict[str, Any]:
        """The customer presses the meter's button (manual reconnection)."""
        return self.meter(key).press_button().to_dict()

    def manual_disconnect(self, key: MeterKey) -> dict[str, Any]:
        return self.meter(key).manual_disconnect().to_dict()

    def local_disconnect(self, key: MeterKey) -> dict[str, Any]:
        return self.meter(key).local_disconnect().to_dict()

    def local_reconnect(self, key: MeterKey) -> dict[str, Any]:
        return self.meter(key).local_reconnect().to_dict()

    def power_fail(self, key: MeterKey, duration_s: float | None = None) -> dict[str, Any]:
        """The meter's supply fails now: power down in the standard and power failure logs and
        an event push (the last gasp); with `duration_s`, power up is logged that much later.
        The simulated meter stays reachable (its modem is taken as battery-backed)."""
        meter = self.meter(key)
        meter.events.power_down(meter.now())
        if duration_s is not None:
            if duration_s <= 0:
                raise ValueError("'duration_s' must be a positive number of seconds")
            loop = asyncio.get_running_loop()
            loop.call_later(duration_s, lambda: meter.events.power_up(meter.now()))
        return {"meter_id": meter.meter_id, "power_down": meter.now(), "duration_s": duration_s}

    def open_cover(self, key: MeterKey) -> dict[str, Any]:
        """Someone opens the meter cover: fraud detection log, event push."""
        meter = self.meter(key)
        event = meter.events.cover(meter.now(), opened=True)
        return {"meter_id": meter.meter_id, "code": event.code, "time": event.time}

    def close_cover(self, key: MeterKey) -> dict[str, Any]:
        meter = self.meter(key)
        event = meter.events.cover(meter.now(), opened=False)
        return {"meter_id": meter.meter_id, "code": event.code, "time": event.time}

    def pushes(self, key: MeterKey) -> dict[str, Any]:
        """Push counters of one meter (zeros when it pushes nowhere)."""
        index = self.index_of(key)
        for agent in self.push_agents:
            if agent.runtime.config.index == index:
                return {
                    "sent": agent.sent,
                    "failed": agent.failed,
                    "connections": agent.connections,
                }
        return {"sent": 0, "failed": 0, "connections": 0}

    def set_control_mode(self, key: MeterKey, mode: int) -> None:
        self.meter(key).control_mode = mode

    def relay(self, key: MeterKey) -> dict[str, Any]:
        """Relay state and the history of every operation (remote, manual, local)."""
        meter = self.meter(key)
        return {
            "meter_id": meter.meter_id,
            "state": meter.control_state.label,
            "output_state": meter.output_state,
            "control_mode": meter.control_mode,
            "history": [event.to_dict() for event in meter.relay_history],
            "limit_w": meter.limiter.threshold_normal,
            "power_w": round(meter.power()[0], 1),
        }

    def set_value(self, key: MeterKey, obis: str, value: Any) -> None:
        """Force an object's value (energy registers keep counting from it)."""
        services.set_value(self.meter(key), obis, value)

    def clear_value(self, key: MeterKey, obis: str | None = None) -> None:
        self.meter(key).clear_value(obis)

    def get_value(self, key: MeterKey, obis: str) -> Any:
        value: Data = services.get_value(self.meter(key), obis)
        return value.to_python()

    def set_faults(self, key: MeterKey | None = None, **changes: Any) -> int:
        """Change fault settings for one meter, or every meter when `key` is None.

        Takes effect at the next request, also on open connections. Returns how many meters
        changed. Offline windows are (start_s, end_s) after the fleet started."""
        checked = coerce_faults("faults", changes)
        targets = self.configs if key is None else [self.config(key)]
        for config in targets:
            for name, value in checked.items():
                setattr(config.faults, name, list(value) if isinstance(value, list) else value)
        return len(targets)

    def clear_faults(self, key: MeterKey | None = None) -> int:
        targets = self.configs if key is None else [self.config(key)]
        for config in targets:
            fresh = Faults()
            for field in dataclasses.fields(Faults):
                setattr(config.faults, field.name, getattr(fresh, field.name))
        return len(targets)

    def faults(self, key: MeterKey) -> dict[str, Any]:
        faults = self.config(key).faults
        return {field.name: getattr(faults, field.name) for field in dataclasses.fields(Faults)}

    def go_offline(self, key: MeterKey | None = None, for_s: float | None = None) -> int:
        """Take meters off the air now: for `for_s` seconds, or until `go_online`."""
        if for_s is None:
            return self.set_faults(key, offline=True)
        start = self.clock.uptime()
        targets = self.configs if key is None else [self.config(key)]
        for config in targets:
            config.faults.offline_windows = [*config.faults.offline_windows, (start, start + for_s)]
        return len(targets)

    def go_online(self, key: MeterKey | None = None) -> int:
        return self.set_faults(key, offline=False, offline_windows=[])

    def uptime(self) -> float:
        return self.clock.uptime()

    def status(self) -> dict[str, Any]:
        runtimes = self.runtimes
        return {
            "meters": len(self.configs),
            "running": self.started,
            "uptime_s": round(self.clock.uptime(), 3),
            "open_connections": sum(r.open_connections for r in runtimes),
            "connections": sum(r.connections for r in runtimes),
            "serial_lines": self.serial_paths,
        }

    def stats(self) -> dict[str, Any]:
        """Per meter: associations ever opened and the most open at the same time (more than
        one means two clients were in the meter together)."""
        return {
            "meters": {
                runtime.meter.meter_id: {
                    "sessions": runtime.sessions,
                    "max_concurrent_sessions": runtime.max_open_sessions,
                }
                for runtime in self.runtimes
            }
        }

    def meter_status(self, key: MeterKey) -> dict[str, Any]:
        runtime = self.runtime(key)
        row = self.row(key)
        info: dict[str, Any] = {k: v for k, v in row.as_csv().items() if k not in SECRET_FIELDS}
        info.update(
            offline=runtime.offline(),
            open_connections=runtime.open_connections,
            connections=runtime.connections,
            faults=self.faults(key),
            relay=self.relay(key),
            pushes=self.pushes(key),
        )
        return info


def fleet_spec(
    meters: int = 1,
    *,
    transport: str = "wrapper",
    security: str = "none",
    host: str = "127.0.0.1",
    port: int = 0,
    seed: int = 0,
    latency_ms: float = 0.0,
    jitter_ms: float = 0.0,
    control_mode: int = 2,
    faults: Mapping[str, Any] | None = None,
    meters_per_line: int = 1,
    baud: int = 9600,
    pace: bool = False,
    mode_e: bool = True,
    fleet_file: str | Path | None = None,
    push: PushSpec | None = None,
) -> FleetSpec:
    """A FleetSpec from keyword arguments, or from a fleet file (then the file decides)."""
    if fleet_file is not None:
        return load_fleet_file(fleet_file)
    spec = FleetSpec(
        meters=meters,
        host=host,
        port=port,
        transport=transport,
        security=security,
        seed=seed,
        control_mode=control_mode,
        latency_ms=latency_ms,
        jitter_ms=jitter_ms,
        faults=dict(faults or {}),
        serial=SerialSpec(meters_per_line=meters_per_line, baud=baud, pace=pace, mode_e=mode_e),
        push=push,
    )
    spec.validate()
    return spec


@asynccontextmanager
async def run_fleet(
    meters: int = 1,
    *,
    transport: str = "wrapper",
    security: str = "none",
    host: str = "127.0.0.1",
    port: int = 0,
    seed: int = 0,
    latency_ms: float = 0.0,
    jitter_ms: float = 0.0,
    control_mode: int = 2,
    faults: Mapping[str, Any] | None = None,
    meters_per_line: int = 1,
    baud: int = 9600,
    pace: bool = False,
    mode_e: bool = True,
    fleet_file: str | Path | None = None,
    spec: FleetSpec | None = None,
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
    clock: Callable[[], float] = time.time,
    inventory: str | Path | None = None,
    push: PushSpec | None = None,
) -> AsyncIterator[Fleet]:
    """A started fleet for the duration of the block (port=0: an ephemeral port per meter)."""
    if spec is None:
        spec = fleet_spec(
            meters,
            transport=transport,
            security=security,
            host=host,
            port=port,
            seed=seed,
            latency_ms=latency_ms,
            jitter_ms=jitter_ms,
            control_mode=control_mode,
            faults=faults,
            meters_per_line=meters_per_line,
            baud=baud,
            pace=pace,
            mode_e=mode_e,
            fleet_file=fleet_file,
            push=push,
        )
    fleet = Fleet(
        build_configs(spec), serial=spec.serial, idle_timeout_s=idle_timeout_s, clock=clock
    )
    async with fleet:
        if inventory is not None:
            fleet.write_inventory(inventory)
        yield fleet
