"""How the ACSE `to_json` dumps show octet strings: upper-case hex, secrets hidden on request
(an AARQ dump holds the LLS password and any dedicated key)."""

from __future__ import annotations


def hex_or_none(value: bytes | None) -> str | None:
    return value.hex().upper() if value is not None else None


def secret_hex(value: bytes | None, redact: bool) -> str | None:
    if value is None:
        return None
    return "<hidden>" if redact else value.hex().upper()
