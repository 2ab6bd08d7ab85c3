"""The head-end's configuration: a TOML file, overridden by HEADEND_<SECTION>_<KEY> variables.

Every key has a default, so an empty (or absent) file runs. Everything is checked before the
daemon connects to anything: unknown sections and keys are refused (a typo must not silently
fall back to a default), and every error names the key, e.g.
``polling.interval_s: must be > 0, got -5``. What the settings are and which values they may
take is here; turning TOML and environment strings into them is headend/config_loader.py."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, is_dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from headend.config_loader import (
    ConfigError,
    TreeLoader,
    check_env_names,
    env_var_name,
    mask_credentials,
    setting_fields,
)
from headend.config_prepaid import PREPAID_CHECKS, PrepaidConfig, QuietWindow, validate_prepaid
from headend.meters.secrets import (
    MASTER_KEY_ENV,
    MasterKey,
    Secret,
    SecretsError,
    load_master_key,
    parse_master_key,
)

__all__ = [
    "CONFIG_ENV",
    "ClusterConfig",
    "Config",
    "ConfigError",
    "DatabaseConfig",
    "ListenerConfig",
    "LoggingConfig",
    "MetricsConfig",
    "MqttConfig",
    "NotificationsConfig",
    "PollingConfig",
    "PrepaidConfig",
    "QuietWindow",
    "RelayConfig",
    "SecurityConfig",
    "StorageConfig",
    "TlsConfig",
    "env_var_name",
    "load_config",
]

CONFIG_ENV = "HEADEND_CONFIG"  # path of the config file, for the CLI
DATABASE_SCHEMES = ("sqlite+aiosqlite", "postgresql+asyncpg")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("json", "console")


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = "sqlite+aiosqlite:///headend.db"

    def __repr__(self) -> str:
        return f"DatabaseConfig(url={self.display_url!r})"

    @property
    def dialect(self) -> str:
        return self.url.split("+", 1)[0]

    @property
    def display_url(self) -> str:
        """The URL fit for a message or a log line: its password, if any, masked."""
        return mask_credentials(self.url)


@dataclass(frozen=True)
class TlsConfig:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False  # skip server certificate verification (test benches only)
    enabled: bool = False  # also implied by any of the files being set

    @property
    def active(self) -> bool:
        return self.enabled or any((self.ca_file, self.cert_file, self.key_file))


@dataclass(frozen=True)
class MqttConfig:
    """The ``[mqtt]`` section, and the one shape of MQTT settings: ``MqttBridge`` takes it
    as it is (tests and library callers build it directly)."""

    host: str | None = None  # None: run the embedded broker
    port: int = 1883
    # Where the embedded broker listens: this box only, unless an installation opens it up.
    embedded_host: str = "127.0.0.1"
    client_id: str = "headend-1"
    billing_prefix: str = "billing"
    headend_prefix: str = "headend"
    username: str | None = None
    password: Secret[str] | None = field(default=None, repr=False)
    keepalive: int = 60
    tls: TlsConfig = field(default_factory=TlsConfig)
    # With the cluster on, balances arrive on $share/{share_group}/{billing_prefix}/balance/+.
    share_group: str = "headend"

    @property
    def embedded(self) -> bool:
        return self.host is None

    @property
    def password_in_clear(self) -> bool:
        """A password that would cross the network unencrypted (no TLS to the broker)."""
        return self.password is not None and not self.tls.active


DEFAULT_OBIS = ("1.0.1.8.0.255", "1.0.2.8.0.255", "1.0.32.7.0.255", "0.0.96.3.10.255")


@dataclass(frozen=True)
class PollingConfig:
    interval_s: float = 900.0
    concurrency: int = 1000
    timeout_s: float = 10.0
    obis: tuple[str, ...] = DEFAULT_OBIS
    retries: int = 3
    max_backoff_s: float = 3600.0
    load_profile: bool = True  # catch up load profile (1.0.99.1.0.255) entries
    billing_profile: bool = True  # catch up billing profile (1.0.98.1.0.255) entries
    profile_interval_s: float = 3600.0  # how often profiles are caught up
    clock_max_drift_s: float = 10.0  # set the meter clock when it drifts more than this
    clock_check_interval_s: float = 86400.0


@dataclass(frozen=True)
class RelayConfig:
    overdue_after_s: float = 1800.0
    retry_base_s: float = 5.0
    retry_max_backoff_s: float = 300.0


@dataclass(frozen=True)
class NotificationsConfig:
    warning_threshold: Decimal = Decimal("20.00")


@dataclass(frozen=True)
class SecurityConfig:
    master_key_file: Path | None = None
    # Only from the environment (HEADEND_MASTER_KEY): a key in the config file would sit
    # next to the database it protects.
    master_key: Secret[str] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ClusterConfig:
    """Several head-ends on one PostgreSQL: meters are leased to one member at a time."""

    enabled: bool = False
    instance_id: str = ""  # "" = hostname-pid
    lease_s: float = 30.0


@dataclass(frozen=True)
class ListenerConfig:
    """Meters that call in (pushes, IDIS "always on"): off unless a port is set."""

    host: str = "0.0.0.0"  # meters call in from the field, not from this box
    tcp_port: int = 0  # wrapper or HDLC over TCP (told apart by the first byte)
    udp_port: int = 0  # wrapper datagrams


@dataclass(frozen=True)
class MetricsConfig:
    """/metrics, /healthz, /readyz on one plain HTTP port: off unless a port is set."""

    host: str = "127.0.0.1"  # "0.0.0.0" for a Prometheus or kubelet on another host
    port: int = 0


@dataclass(frozen=True)
class StorageConfig:
    """How long readings are kept: 0 = forever. On PostgreSQL a month's partition is dropped
    once all of it is older (storage/partitions.py); on SQLite older rows are deleted."""

    retention_days: int = 0


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"
    format: str = "json"


@dataclass(frozen=True)
class Config:
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    polling: PollingConfig = field(default_factory=PollingConfig)
    relay: RelayConfig = field(default_factory=RelayConfig)
    notifications: NotificationsConfig = field(default_factory=NotificationsConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    listener: ListenerConfig = field(default_factory=ListenerConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    prepaid: PrepaidConfig = field(default_factory=PrepaidConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    # The file it came from (not a setting).
    source: Path | None = field(default=None, compare=False, metadata={"setting": False})

    def open_master_key(
        self, environ: Mapping[str, str] | None = None, *, generate: bool = True
    ) -> MasterKey:
        """The master key for meter secrets (see headend.meters.secrets.load_master_key); raises
        SecretsError when there is none."""
        env = dict(os.environ if environ is None else environ)
        if self.security.master_key is not None:
            env[MASTER_KEY_ENV] = self.security.master_key.reveal()
        return load_master_key(
            key_file=self.security.master_key_file,
            database_url=self.database.url,
            environ=env,
            generate=generate,
        )


# Secret keys are never echoed in error messages; the master key may not come from the file
# (a key in the config file would sit next to the database it protects).
_LOADER = TreeLoader(
    secret_keys=frozenset({"mqtt.password", "security.master_key"}),
    env_only={"security.master_key": f"set {MASTER_KEY_ENV}"},
)


# ---------------------------------------------------------------------------------------------
# Validation of the built values.

Check = Callable[[Any], str | None]


def _gt(limit: float) -> Check:
    return lambda v: None if v > limit else f"must be > {limit:g}, got {v:g}"


def _ge(limit: float) -> Check:
    return lambda v: None if v >= limit else f"must be >= {limit:g}, got {v:g}"


def _between(lo: int, hi: int) -> Check:
    return lambda v: None if lo <= v <= hi else f"must be between {lo} and {hi}, got {v}"


def _one_of(*choices: str) -> Check:
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}, got {v!r}"


def _non_empty(v: str) -> str | None:
    return None if v.strip() else "must not be empty"


def _topic_prefix(v: str) -> str | None:
    if not v or v.startswith(("/", "$")) or v.endswith("/") or "//" in v:
        return f"must be a topic prefix like 'headend' (no leading/trailing '/'), got {v!r}"
    if any(c in v for c in "+#\x00") or any(ord(c) < 0x20 for c in v):
        return f"must not contain '+', '#' or control characters, got {v!r}"
    return None


def _database_url(v: str) -> str | None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(v)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        return f"not a database URL: {v!r}"
    if url.drivername not in DATABASE_SCHEMES:
        return (
            f"scheme must be {' or '.join(DATABASE_SCHEMES)}, got {url.drivername!r} "
            f"(e.g. sqlite+aiosqlite:///headend.db)"
        )
    if url.drivername.startswith("postgresql") and not url.database:
        return "PostgreSQL URL needs a database name (postgresql+asyncpg://user@host/db)"
    return None


def _share_group(v: str) -> str | None:
    if not v or any(c in v for c in "/+#\x00"):
        return f"must be a name without '/', '+' or '#', got {v!r}"
    return None


def _obis(v: str) -> str | None:
    from cosem_objects.obis import Obis

    try:
        Obis.parse(v)
    except ValueError:
        return f"not an OBIS code: {v!r} (e.g. 1.0.1.8.0.255)"
    return None


def _existing_file(v: Path | None) -> str | None:
    if v is not None and not v.is_file():
        return f"file not found: {v}"
    return None


_CHECKS: dict[str, Check] = {
    "database.url": _database_url,
    "mqtt.host": lambda v: None if v is None or v.strip() else "must not be blank",
    "mqtt.embedded_host": _non_empty,
    "mqtt.port": _between(1, 65535),
    "mqtt.client_id": _non_empty,
    "mqtt.billing_prefix": _topic_prefix,
    "mqtt.headend_prefix": _topic_prefix,
    "mqtt.keepalive": _between(1, 65535),
    "mqtt.tls.ca_file": _existing_file,
    "mqtt.tls.cert_file": _existing_file,
    "mqtt.tls.key_file": _existing_file,
    "polling.interval_s": _gt(0),
    "polling.concurrency": _ge(1),
    "polling.timeout_s": _gt(0),
    "polling.retries": _ge(0),
    "polling.max_backoff_s": _gt(0),
    "polling.profile_interval_s": _gt(0),
    "polling.clock_max_drift_s": _ge(0),
    "polling.clock_check_interval_s": _gt(0),
    "relay.overdue_after_s": _gt(0),
    "relay.retry_base_s": _gt(0),
    "relay.retry_max_backoff_s": _gt(0),
    "notifications.warning_threshold": lambda v: None if v >= 0 else f"must be >= 0, got {v}",
    "security.master_key_file": _existing_file,
    "logging.level": _one_of(*LOG_LEVELS),
    "logging.format": _one_of(*LOG_FORMATS),
    "mqtt.share_group": _share_group,
    "cluster.lease_s": _gt(0),
    "listener.host": _non_empty,
    "listener.tcp_port": _between(0, 65535),
    "listener.udp_port": _between(0, 65535),
    "metrics.host": _non_empty,
    "metrics.port": _between(0, 65535),
    "storage.retention_days": _ge(0),
    **PREPAID_CHECKS,
}


def _validate(config: Config) -> None:
    def walk(obj: Any, prefix: str) -> None:
        for f in setting_fields(obj):
            key = f"{prefix}.{f.name}" if prefix else f.name
            value = getattr(obj, f.name)
            if is_dataclass(value):
                walk(value, key)
                continue
            check = _CHECKS.get(key)
            if check is not None:
                problem = check(value)
                if problem:
                    raise ConfigError(key, problem)

    walk(config, "")
    for i, code in enumerate(config.polling.obis):
        problem = _obis(code)
        if problem:
            raise ConfigError(f"polling.obis[{i}]", problem)
    if not config.polling.obis:
        raise ConfigError("polling.obis", "must list at least one OBIS code")
    if config.relay.retry_base_s > config.relay.retry_max_backoff_s:
        raise ConfigError(
            "relay.retry_base_s",
            f"must not exceed relay.retry_max_backoff_s ({config.relay.retry_max_backoff_s:g}), "
            f"got {config.relay.retry_base_s:g}",
        )
    if config.cluster.enabled and config.database.dialect != "postgresql":
        raise ConfigError(
            "cluster.enabled",
            "a cluster needs PostgreSQL (database.url is SQLite); set cluster.enabled = false",
        )
    if config.cluster.enabled and config.mqtt.embedded:
        raise ConfigError(
            "mqtt.host",
            "a cluster shares one broker (balance events on a shared subscription): set "
            "mqtt.host; the embedded broker is one per process",
        )
    validate_prepaid(config.prepaid)
    tls = config.mqtt.tls
    if (tls.cert_file is None) != (tls.key_file is None):
        raise ConfigError("mqtt.tls.key_file", "cert_file and key_file go together")
    if config.mqtt.password is not None and config.mqtt.username is None:
        raise ConfigError("mqtt.password", "set mqtt.username too")
    if config.security.master_key is not None:
        try:
            parse_master_key(config.security.master_key.reveal(), MASTER_KEY_ENV)
        except SecretsError as exc:
            raise ConfigError(MASTER_KEY_ENV, str(exc).split(": ", 1)[-1]) from None


def _normalise(config: Config) -> Config:
    """Canonical spellings: OBIS codes dotted, log level upper case."""
    from cosem_objects.obis import Obis

    polling = replace(config.polling, obis=tuple(str(Obis.parse(c)) for c in config.polling.obis))
    logging_ = replace(config.logging, level=config.logging.level.upper())
    return replace(config, polling=polling, logging=logging_)


def load_config(path: Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read `path` (None: defaults only), apply HEADEND_<SECTION>_<KEY> overrides, validate.

    The master key may be given as HEADEND_MASTER_KEY (or HEADEND_SECURITY_MASTER_KEY)."""
    env = dict(os.environ if environ is None else environ)
    table: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                table = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError("config", f"file not found: {path}") from None
        except IsADirectoryError:
            raise ConfigError("config", f"not a file: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("config", f"{path}: invalid TOML: {exc}") from None
    if MASTER_KEY_ENV in env and env_var_name("security.master_key") not in env:
        env[env_var_name("security.master_key")] = env[MASTER_KEY_ENV]
    check_env_names(Config, env)
    known_sections = {f.name for f in setting_fields(Config)}
    for section in table:
        if section not in known_sections:
            raise ConfigError(section, "unknown section")
    try:
        built: Config = _LOADER.build(Config, "", table, env)
    except TypeError as exc:  # pragma: no cover - a dataclass/field mismatch is a bug here
        raise ConfigError("config", str(exc)) from None
    # Lower-case log levels are accepted: normalise before validating.
    built = replace(
        built,
        logging=LoggingConfig(level=built.logging.level.upper(), format=built.logging.format),
        source=path,
    )
    _validate(built)
    return _normalise(built)
