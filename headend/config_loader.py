"""Generic loading of a tree of frozen dataclasses from a TOML table and HEADEND_* variables.

Kept apart from headend/config.py (which says what the settings are and what values they may
take) because none of this knows a single setting: a section is any dataclass field whose type
is a dataclass, a key is any other field, and its declared type decides how a TOML value or an
environment string becomes a value. Every error names the dotted key; values of secret keys are
never shown."""

from __future__ import annotations

import json
import math
import re
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import Field, dataclass, field, fields, is_dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from headend.meters.secrets import Secret

__all__ = [
    "ENV_PREFIX",
    "ConfigError",
    "TreeLoader",
    "check_env_names",
    "dotted_keys",
    "env_var_name",
    "mask_credentials",
    "setting_fields",
]

ENV_PREFIX = "HEADEND_"


# scheme://user:password@ -> the password, up to the last '@' of the address (an unescaped
# '@' in a password must not leave its tail visible).
_URL_PASSWORD = re.compile(r"(?P<head>(?:[A-Za-z][A-Za-z0-9+.-]*)?://[^:/@\s'\"]*:)\S*@")


def mask_credentials(text: str) -> str:
    """`text` with the password of every URL in it replaced by ***."""
    return _URL_PASSWORD.sub(r"\g<head>***@", text)


class ConfigError(Exception):
    """A bad config file or value; `key` is the dotted name ("polling.interval_s").

    Its message never carries a URL's password, whichever check wrote it: errors end up in
    logs and terminals, a database URL in them must not open the database."""

    def __init__(self, key: str, message: str) -> None:
        message = mask_credentials(message)
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def env_var_name(key: str) -> str:
    """ "polling.interval_s" -> "HEADEND_POLLING_INTERVAL_S"; "mqtt.tls.ca_file" ->
    "HEADEND_MQTT_TLS_CA_FILE"."""
    return ENV_PREFIX + key.replace(".", "_").upper()


def setting_fields(cls: Any) -> Iterator[Field[Any]]:
    """The fields of a section that are settings (a field with metadata setting=False, such
    as the file a config came from, is not read from anywhere)."""
    for f in fields(cls):
        if f.init and f.metadata.get("setting", True):
            yield f


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _file_key(f: Field[Any]) -> str:
    """The key's spelling in the file: its field name, unless that is a Python keyword
    (``from`` is declared ``start`` with metadata key="from")."""
    return str(f.metadata.get("key", f.name))


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class TreeLoader:
    """Builds a dataclass tree. `secret_keys` are never echoed; `env_only` keys may not come
    from the file (their value says what to set instead)."""

    secret_keys: frozenset[str] = frozenset()
    env_only: Mapping[str, str] = field(default_factory=dict)

    def describe(self, key: str, value: object) -> str:
        if key in self.secret_keys:
            return "***"
        text = repr(value)
        return text if len(text) <= 80 else text[:77] + "..."

    def convert(self, key: str, tp: Any, value: Any, from_env: bool) -> Any:
        """One value to the field's type; raises ConfigError naming the key."""
        base, optional = _unwrap_optional(tp)
        shown = self.describe(key, value)
        if optional and (value is None or (isinstance(value, str) and value.strip() == "")):
            return None
        origin = typing.get_origin(base)
        if base is bool:
            if isinstance(value, bool):
                return value
            if from_env and isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
                return value.strip().lower() in _TRUE
            raise ConfigError(key, f"must be true or false, got {shown}")
        if base is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if from_env and isinstance(value, str):
                try:
                    return int(value.strip())
                except ValueError:
                    pass
            raise ConfigError(key, f"must be an integer, got {shown}")
        if base is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                result = float(value)
            elif from_env and isinstance(value, str):
                try:
                    result = float(value.strip())
                except ValueError:
                    raise ConfigError(key, f"must be a number, got {shown}") from None
            else:
                raise ConfigError(key, f"must be a number, got {shown}")
            if not math.isfinite(result):
                raise ConfigError(key, f"must be a finite number, got {shown}")
            return result
        if base is Decimal:
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise ConfigError(key, f'must be a decimal number (e.g. "20.00"), got {shown}')
            try:
                number = Decimal(str(value).strip())
            except InvalidOperation:
                raise ConfigError(
                    key, f'must be a decimal number (e.g. "20.00"), got {shown}'
                ) from None
            if not number.is_finite():
                raise ConfigError(key, f"must be a finite decimal number, got {shown}")
            return number
        if base is str:
            if isinstance(value, str):
                return value
            raise ConfigError(key, f"must be a string, got {shown}")
        if base is Path:
            if isinstance(value, str) and value.strip():
                return Path(value).expanduser()
            raise ConfigError(key, f"must be a file path, got {shown}")
        if origin is Secret:
            if isinstance(value, str):
                return Secret(value)
            raise ConfigError(key, "must be a string")
        if is_dataclass(base):  # an item of a list of tables
            return self.build(base, key, value, {})  # type: ignore[arg-type]
        if origin is tuple:
            (item_tp, _) = typing.get_args(base)
            items = value
            if from_env and isinstance(value, str):
                text = value.strip()
                if text.startswith("["):
                    try:
                        items = json.loads(text)
                    except json.JSONDecodeError as exc:
                        raise ConfigError(
                            key, f"must be a JSON list or comma-separated: {exc}"
                        ) from None
                else:
                    items = [part.strip() for part in text.split(",") if part.strip()]
            if not isinstance(items, list):
                raise ConfigError(key, f"must be a list, got {shown}")
            return tuple(
                self.convert(f"{key}[{i}]", item_tp, item, from_env) for i, item in enumerate(items)
            )
        raise AssertionError(f"no converter for {key}: {tp!r}")  # pragma: no cover

    def build(self, cls: type, key: str, table: Mapping[str, Any], env: Mapping[str, str]) -> Any:
        """Build one section dataclass from its TOML table and the environment."""
        if not isinstance(table, Mapping):
            raise ConfigError(key, f"must be a table, got {self.describe(key, table)}")
        hints = typing.get_type_hints(cls)
        known = {_file_key(f) for f in setting_fields(cls)}
        for name in table:
            if name not in known:
                raise ConfigError(f"{key}.{name}", f"unknown key in [{key}]")
        kwargs: dict[str, Any] = {}
        for f in setting_fields(cls):
            name = _file_key(f)
            sub = f"{key}.{name}" if key else name
            tp = hints[f.name]
            if is_dataclass(tp):
                kwargs[f.name] = self.build(tp, sub, table.get(name, {}), env)  # type: ignore[arg-type]
                continue
            if sub in self.env_only and name in table:
                raise ConfigError(sub, f"not allowed in the config file; {self.env_only[sub]}")
            env_name = env_var_name(sub)
            if env_name in env:
                try:
                    kwargs[f.name] = self.convert(sub, tp, env[env_name], from_env=True)
                except ConfigError as exc:
                    raise ConfigError(sub, f"{exc.message} (from {env_name})") from None
            elif name in table:
                kwargs[f.name] = self.convert(sub, tp, table[name], from_env=False)
        return cls(**kwargs)


def dotted_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of a dataclass tree, sections included (for env typo detection)."""
    names: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in setting_fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        names.append(key)
        if is_dataclass(hints[f.name]):
            names.extend(dotted_keys(hints[f.name], key))
    return names


def check_env_names(cls: type, env: Mapping[str, str]) -> None:
    """A HEADEND_<SECTION>_... variable that names no key is a typo: refuse it."""
    keys = dotted_keys(cls)
    sections = [k for k in keys if "." not in k]
    valid = {env_var_name(k) for k in keys}
    for name in env:
        if not name.startswith(ENV_PREFIX) or name in valid:
            continue
        for section in sections:
            if name.startswith(env_var_name(section) + "_"):
                raise ConfigError(name, f"unknown setting (no key matches it in [{section}])")
