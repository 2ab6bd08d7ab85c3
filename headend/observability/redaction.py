"""The last processor before a log line is rendered: whatever slipped through, no secret
leaves in a log line.

The first line of defence is that secrets are never handed to a logger: they live in
`Secret` values whose repr and str print '***', and the database URL is logged as its
`display_url`. This is the second: a field whose name says it holds a secret is replaced
whole, a password in a URL (scheme://user:password@host) is masked, any bytes value is
replaced by its length (no key material as a repr), and a run of exactly 32 or 64 hex digits,
the shape of an AES-128 key or the 32-byte master key written out, is masked in any text but
the identifiers the head-end binds on purpose (meter, command, event, instance, message)."""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping
from typing import Any

__all__ = ["MASK", "redact", "redact_text"]

MASK = "[redacted]"

_SECRET_NAME = re.compile(
    r"(pass(word|wd|phrase)?|secret|token|credential|master_key|auth_key|enc_key|(^|_)key)$",
    re.IGNORECASE,
)
_URL_PASSWORD = re.compile(
    r"(?P<head>\b[a-z][a-z0-9+.\-]*://[^\s:/@]*):(?P<secret>[^\s@/]+)@", re.I
)
_HEX_KEY = re.compile(r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{64}|[0-9A-Fa-f]{32})(?![0-9A-Fa-f])")
_IDENTIFIERS = frozenset(
    {"meter_id", "command_id", "event_id", "instance_id", "message_id", "request_id", "logger"}
)


def redact_text(text: str) -> str:
    text = _URL_PASSWORD.sub(lambda m: f"{m.group('head')}:***@", text)
    return _HEX_KEY.sub(MASK, text)


def _clean(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if depth > 4:
        return value
    if isinstance(value, Mapping):
        return {
            k: MASK if isinstance(k, str) and _SECRET_NAME.search(k) else _clean(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_clean(v, depth + 1) for v in value]
    return value


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """structlog processor: see the module's docstring."""
    for key in list(event_dict):
        value = event_dict[key]
        if key.startswith("_") or value is None or isinstance(value, bool | int | float):
            continue
        if _SECRET_NAME.search(key):
            event_dict[key] = MASK
        elif key not in _IDENTIFIERS:
            event_dict[key] = _clean(value)
    return event_dict
