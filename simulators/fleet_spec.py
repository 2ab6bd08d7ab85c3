"""From command-line flags and a TOML fleet file to one MeterConfig per meter.

The fleet file lets one run mix transports, securities, control modes and faults per meter,
while the flags cover the common case of N identical meters. Values are checked here, before
anything listens, and a bad key or value is reported by its name in the file."""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulators.config import MeterConfig, PushSpec, Security

TRANSPORTS = ("wrapper", "hdlc", "serial")
SECURITIES = tuple(s.value for s in Security)
MAX_PORT = 65535
# Physical (lower) HDLC addresses: 2-byte addresses reach 0x7F, 4-byte ones 0x3FFF.
MAX_PHYSICAL = 0x3FFF


class FleetFileError(ValueError):
    """A fleet file or flag value that cannot run; the message names the key."""


@dataclass(slots=True)
class SerialSpec:
    """How serial meters are put on pseudo-terminals."""

    meters_per_line: int = 1  # HDLC addresses sharing one line (RS-485 multi-drop)
    baud: int = 9600  # reported in the inventory; the pacing rate when `pace` is set
    pace: bool = False  # hold replies to the line's byte rate, like a real line
    mode_e: bool = True  # also answer the IEC 62056-21 mode E opening on the line


@dataclass(slots=True)
class MeterOverride:
    """Settings for some meters only; `indexes` are 0-based meter indexes."""

    indexes: tuple[int, ...]
    settings: dict[str, Any] = field(default_factory=dict)
    faults: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class FleetSpec:
    """Everything that decides the fleet's meters (the flags and the file map onto it)."""

    meters: int = 1
    host: str = "127.0.0.1"
    port: int = 4059  # meter i listens on port + i; 0 = an ephemeral port for every meter
    transport: str = "wrapper"
    security: str = "none"
    seed: int = 0
    control_mode: int = 2
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    utc_offset_min: int = 0
    faults: dict[str, Any] = field(default_factory=dict)  # fleet-wide Faults fields
    serial: SerialSpec = field(default_factory=SerialSpec)
    overrides: list[MeterOverride] = field(default_factory=list)
    inventory: str | None = None
    control_port: int | None = None  # None = no control interface, 0 = ephemeral
    push: PushSpec | None = None  # where every meter pushes (dlms-sim --push-to)

    def validate(self) -> None:
        if not 1 <= self.meters <= 100_000:
            raise FleetFileError(f"meters: {self.meters} is not between 1 and 100000")
        _check_choice("transport", self.transport, TRANSPORTS)
        _check_choice("security", self.security, SECURITIES)
        _check_port("port", self.port)
        if self.port and self.port + self.meters - 1 > MAX_PORT:
            raise FleetFileError(
                f"port: {self.meters} meters from port {self.port} run past {MAX_PORT}"
            )
        _check_control_mode("control_mode", self.control_mode)
        _check_non_negative("latency_ms", self.latency_ms)
        _check_non_negative("jitter_ms", self.jitter_ms)
        if self.control_port is not None:
            _check_port("control_port", self.control_port)
        check_faults("faults", self.faults)
        if self.serial.meters_per_line < 1:
            raise FleetFileError("serial.meters_per_line must be at least 1")
        if self.serial.baud <= 0:
            raise FleetFileError("serial.baud must be positive")
        for number, override in enumerate(self.overrides):
            where = f"meter[{number}]"
            for index in override.indexes:
                if not 0 <= index < self.meters:
                    raise FleetFileError(f"{where}: index {index} is outside 0..{self.meters - 1}")
            _check_meter_settings(where, override.settings)
            check_faults(f"{where}.faults", override.faults)


_FLEET_KEYS = {
    "meters": int,
    "host": str,
    "port": int,
    "transport": str,
    "security": str,
    "seed": int,
    "control_mode": int,
    "latency_ms": float,
    "jitter_ms": float,
    "utc_offset_min": int,
    "inventory": str,
    "control_port": int,
}
_SERIAL_KEYS = {"meters_per_line": int, "baud": int, "pace": bool, "mode_e": bool}
_METER_KEYS = {
    "transport": str,
    "security": str,
    "control_mode": int,
    "server_physical": int,
    "utc_offset_min": int,
    "latency_ms": float,
    "jitter_ms": float,
}
_FAULT_TYPES: dict[str, type] = {
    "latency_ms": float,
    "jitter_ms": float,
    "drop_rate": float,
    "corrupt_rate": float,
    "close_mid_session_rate": float,
    "refuse_association": bool,
    "relay_stuck": bool,
    "relay_failure": bool,
    "clock_drift_s_per_day": float,
    "offline": bool,
    "offline_windows": list,
}
FAULT_NAMES = tuple(_FAULT_TYPES)


def load_fleet_file(path: str | Path) -> FleetSpec:
    """Read a TOML fleet file (see config/fleet.example.toml)."""
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise FleetFileError(f"cannot read fleet file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise FleetFileError(f"fleet file {path} is not valid TOML: {exc}") from exc
    return parse_fleet_document(document)


def parse_fleet_document(document: Mapping[str, Any]) -> FleetSpec:
    spec = FleetSpec()
    _reject_unknown("", document, {"fleet", "faults", "serial", "meter"})
    fleet = _table(document, "fleet")
    _reject_unknown("fleet.", fleet, set(_FLEET_KEYS))
    for key, value in fleet.items():
        setattr(spec, key, _typed(f"fleet.{key}", value, _FLEET_KEYS[key]))
    spec.faults = _faults(document.get("faults", {}), "faults")
    serial = _table(document, "serial")
    _reject_unknown("serial.", serial, set(_SERIAL_KEYS))
    for key, value in serial.items():
        setattr(spec.serial, key, _typed(f"serial.{key}", value, _SERIAL_KEYS[key]))
    meters = document.get("meter", [])
    if not isinstance(meters, list):
        raise FleetFileError("meter: expected an array of tables ([[meter]])")
    for number, entry in enumerate(meters):
        spec.overrides.append(_override(number, entry))
    spec.validate()
    return spec


def _override(number: int, entry: Any) -> MeterOverride:
    where = f"meter[{number}]"
    if not isinstance(entry, dict):
        raise FleetFileError(f"{where}: expected a table")
    selectors = [key for key in ("index", "indexes", "range") if key in entry]
    if len(selectors) != 1:
        raise FleetFileError(f"{where}: give exactly one of index, indexes, range")
    _reject_unknown(f"{where}.", entry, {"index", "indexes", "range", "faults", *_METER_KEYS})
    selector = selectors[0]
    raw = entry[selector]
    if selector == "index":
        indexes: tuple[int, ...] = (_typed(f"{where}.index", raw, int),)
    elif selector == "indexes":
        if not isinstance(raw, list) or not raw:
            raise FleetFileError(f"{where}.indexes: expected a non-empty list of integers")
        indexes = tuple(_typed(f"{where}.indexes", item, int) for item in raw)
    else:
        if not isinstance(raw, list) or len(raw) != 2:
            raise FleetFileError(f"{where}.range: expected [first, last] (inclusive)")
        first, last = (_typed(f"{where}.range", item, int) for item in raw)
        if last < first:
            raise FleetFileError(f"{where}.range: last {last} is before first {first}")
        indexes = tuple(range(first, last + 1))
    settings = {
        key: _typed(f"{where}.{key}", value, _METER_KEYS[key])
        for key, value in entry.items()
        if key in _METER_KEYS
    }
    faults = _faults(entry.get("faults", {}), f"{where}.faults")
    return MeterOverride(indexes=indexes, settings=settings, faults=faults)


def _faults(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise FleetFileError(f"{where}: expected a table")
    _reject_unknown(f"{where}.", raw, set(_FAULT_TYPES))
    return {key: _typed(f"{where}.{key}", value, _FAULT_TYPES[key]) for key, value in raw.items()}


def check_faults(where: str, faults: Mapping[str, Any]) -> None:
    """Check fault settings from any source (file, control interface, Python)."""
    for key, value in faults.items():
        if key not in _FAULT_TYPES:
            raise FleetFileError(f"{where}.{key}: unknown fault (known: {', '.join(FAULT_NAMES)})")
        name = f"{where}.{key}"
        if key.endswith("_rate"):
            if not 0.0 <= value <= 1.0:
                raise FleetFileError(f"{name}: {value} is not a probability between 0 and 1")
        elif key in ("latency_ms", "jitter_ms"):
            _check_non_negative(name, value)
        elif key == "offline_windows":
            normalise_windows(name, value)


def normalise_windows(where: str, value: Any) -> list[tuple[float, float]]:
    """Offline windows as (start, end) seconds after the fleet started."""
    if not isinstance(value, list | tuple):
        raise FleetFileError(f"{where}: expected a list of [start_s, end_s] pairs")
    windows: list[tuple[float, float]] = []
    for item in value:
        if not isinstance(item, list | tuple) or len(item) != 2:
            raise FleetFileError(f"{where}: each window is [start_s, end_s]")
        start, end = (_typed(where, part, float) for part in item)
        if start < 0 or end < start:
            raise FleetFileError(f"{where}: window [{start}, {end}] is not 0 <= start <= end")
        windows.append((start, end))
    return windows


def coerce_faults(where: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Type-convert and check fault settings arriving as JSON or keyword arguments."""
    out = {}
    for key, value in raw.items():
        if key not in _FAULT_TYPES:
            raise FleetFileError(f"{where}.{key}: unknown fault (known: {', '.join(FAULT_NAMES)})")
        out[key] = _typed(f"{where}.{key}", value, _FAULT_TYPES[key])
    check_faults(where, out)
    if "offline_windows" in out:
        out["offline_windows"] = normalise_windows(
            f"{where}.offline_windows", out["offline_windows"]
        )
    return out


def build_configs(spec: FleetSpec) -> list[MeterConfig]:
    """One MeterConfig per meter: fleet defaults, then the overrides in file order."""
    spec.validate()
    per_meter: dict[int, list[MeterOverride]] = {}
    for override in spec.overrides:
        for index in override.indexes:
            per_meter.setdefault(index, []).append(override)
    fleet_faults = coerce_faults("faults", spec.faults)
    configs = []
    for index in range(spec.meters):
        settings: dict[str, Any] = {
            "transport": spec.transport,
            "security": spec.security,
            "control_mode": spec.control_mode,
            "latency_ms": spec.latency_ms,
            "jitter_ms": spec.jitter_ms,
            "utc_offset_min": spec.utc_offset_min,
        }
        faults = dict(fleet_faults)
        for override in per_meter.get(index, ()):
            settings.update(override.settings)
            faults.update(coerce_faults(f"meter[{index}].faults", override.faults))
        physical = settings.pop("server_physical", None)
        config = MeterConfig.create(
            index,
            seed=spec.seed,
            host=spec.host,
            port=spec.port + index if spec.port else 0,
            **settings,
        )
        if physical is not None:
            config.server_physical = physical
        config.push = spec.push
        # Fleet-wide latency is the baseline; an explicit fault setting wins.
        config.faults = dataclasses.replace(config.faults, **faults)
        configs.append(config)
    _check_serial_addresses(configs, spec.serial.meters_per_line)
    return configs


def serial_groups(configs: Iterable[MeterConfig], meters_per_line: int) -> list[list[MeterConfig]]:
    """Serial meters in index order, `meters_per_line` to a pseudo-terminal."""
    serial = [config for config in configs if config.transport == "serial"]
    return [serial[i : i + meters_per_line] for i in range(0, len(serial), meters_per_line)]


def _check_serial_addresses(configs: list[MeterConfig], meters_per_line: int) -> None:
    for line in serial_groups(configs, meters_per_line):
        seen: dict[int, int] = {}
        for config in line:
            if config.server_physical in seen:
                raise FleetFileError(
                    f"meters {seen[config.server_physical]} and {config.index} share a serial "
                    f"line and the HDLC physical address {config.server_physical}"
                )
            seen[config.server_physical] = config.index


def _check_meter_settings(where: str, settings: Mapping[str, Any]) -> None:
    if "transport" in settings:
        _check_choice(f"{where}.transport", settings["transport"], TRANSPORTS)
    if "security" in settings:
        _check_choice(f"{where}.security", settings["security"], SECURITIES)
    if "control_mode" in settings:
        _check_control_mode(f"{where}.control_mode", settings["control_mode"])
    if "server_physical" in settings and not 16 <= settings["server_physical"] <= MAX_PHYSICAL:
        raise FleetFileError(f"{where}.server_physical: not between 16 and {MAX_PHYSICAL}")
    for key in ("latency_ms", "jitter_ms"):
        if key in settings:
            _check_non_negative(f"{where}.{key}", settings[key])


def _table(document: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = document.get(key, {})
    if not isinstance(value, dict):
        raise FleetFileError(f"{key}: expected a table")
    return value


def _reject_unknown(prefix: str, table: Mapping[str, Any], known: set[str]) -> None:
    for key in table:
        if key not in known:
            raise FleetFileError(f"{prefix}{key}: unknown key (known: {', '.join(sorted(known))})")


def _typed(name: str, value: Any, kind: type) -> Any:
    """`value` as `kind`, accepting ints for floats but never bools for numbers."""
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind in (str, bool, list) and isinstance(value, kind):
        return value
    raise FleetFileError(f"{name}: expected {kind.__name__}, got {value!r}")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise FleetFileError(f"{name}: {value!r} is not one of {', '.join(choices)}")


def _check_port(name: str, value: int) -> None:
    if not 0 <= value <= MAX_PORT:
        raise FleetFileError(f"{name}: {value} is not a TCP port")


def _check_control_mode(name: str, value: int) -> None:
    if not 0 <= value <= 6:
        raise FleetFileError(f"{name}: control mode {value} is not between 0 and 6")


def _check_non_negative(name: str, value: float) -> None:
    if value < 0:
        raise FleetFileError(f"{name}: {value} is negative")
