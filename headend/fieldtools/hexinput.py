"""Hex text as a field engineer pastes it, to bytes.

Probe logs and capture tools print bytes in many ways: `7E A0 08`, `7EA008`, `0x7E 0xA0`,
`7e:a0:08`, wrapped over lines. Everything that is not a hex digit, and is one of those
separators, is dropped; anything else (a stray letter, a timestamp) is an error naming where it
is, because guessing would decode the wrong bytes. Each argument or line is kept as a chunk too:
bare APDUs pasted one per line cannot be told apart once joined."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cosem_objects.errors import DecodeError

MAX_INPUT_BYTES = 1 << 20
"""More than any capture a person pastes; bounds memory for a runaway --file."""

_PREFIX = re.compile(r"(?<![0-9a-fA-F])0[xX](?=[0-9a-fA-F])")
_SEPARATORS = re.compile(r"[\s:,;\-]+")
_HEX = re.compile(r"[0-9a-fA-F]*")


@dataclass(frozen=True, slots=True)
class HexInput:
    """The bytes of every chunk in order, and the chunks (lines / arguments) apart."""

    chunks: tuple[bytes, ...]

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


def parse_hex_texts(texts: list[str]) -> HexInput:
    """Every argument (or file), line by line; DecodeError saying what is wrong and where."""
    chunks: list[bytes] = []
    total = 0
    for number, text in enumerate(texts, start=1):
        for line_number, line in enumerate(text.splitlines(), start=1):
            where = (
                f"input {number}, line {line_number}" if len(texts) > 1 else f"line {line_number}"
            )
            chunk = _parse_line(line, where)
            if chunk:
                total += len(chunk)
                if total > MAX_INPUT_BYTES:
                    raise DecodeError(f"input over {MAX_INPUT_BYTES} bytes")
                chunks.append(chunk)
    if not chunks:
        raise DecodeError("no hex bytes in the input")
    return HexInput(tuple(chunks))


def _parse_line(line: str, where: str) -> bytes:
    digits = _SEPARATORS.sub("", _PREFIX.sub("", line))
    match = _HEX.fullmatch(digits)
    if match is None:
        bad = next(c for c in digits if c not in "0123456789abcdefABCDEF")
        raise DecodeError(f"{where}: {bad!r} is not a hex digit")
    if len(digits) % 2:
        raise DecodeError(f"{where}: odd number of hex digits ({len(digits)})")
    return bytes.fromhex(digits)
