"""Meter passwords and keys, encrypted at rest under one master key.

A stolen database file must not hand out every meter's keys, so each secret is sealed with
AES-256-GCM under a master key kept outside the database (environment or key file). The
associated data binds a ciphertext to its meter and field, so a ciphertext copied onto another
meter's row does not decrypt. Each token carries a short fingerprint of the master key that
sealed it, so a wrong master key is reported as such instead of as corruption."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets as _stdlib_secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Generic, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from headend.observability.logs import get_logger

__all__ = [
    "MASTER_KEY_ENV",
    "MasterKey",
    "Secret",
    "SecretsError",
    "default_key_file",
    "load_master_key",
    "parse_master_key",
]

log = get_logger(__name__)

MASTER_KEY_ENV = "HEADEND_MASTER_KEY"
_TOKEN_VERSION = "v1"
_KEY_LEN = 32
_NONCE_LEN = 12

T = TypeVar("T", str, bytes)


class SecretsError(Exception):
    """A master key that is missing, malformed, or not the one that sealed a secret."""


class Secret(Generic[T]):
    """A password or key that never shows itself in repr, str, f-strings or logs.

    Call `reveal()` at the one place that needs the value (the DLMS session)."""

    __slots__ = ("_value",)
    _value: T

    def __init__(self, value: T) -> None:
        self._value = value

    def reveal(self) -> T:
        return self._value

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return "***"

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        a: object = self._value
        b: object = other._value
        if isinstance(a, str) and isinstance(b, str):
            return hmac.compare_digest(a.encode(), b.encode())
        if isinstance(a, bytes) and isinstance(b, bytes):
            return hmac.compare_digest(a, b)
        return False

    def __hash__(self) -> int:
        return hash(self._value)

    def __copy__(self) -> Secret[T]:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Secret[T]:
        return self  # immutable; lets dataclasses.asdict/replace handle configs holding one

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling would copy the value out of sight of the reprs; refuse.
        raise TypeError("Secret values are not picklable")


class MasterKey:
    """The AES-256-GCM key that seals every meter secret."""

    __slots__ = ("_aead", "_fingerprint", "source")

    def __init__(self, key: bytes, source: str = "memory") -> None:
        if len(key) != _KEY_LEN:
            raise SecretsError(f"master key must be {_KEY_LEN} bytes, got {len(key)}")
        self._aead = AESGCM(key)
        self._fingerprint = hmac.new(key, b"headend master key id", hashlib.sha256).hexdigest()[:8]
        self.source = source  # where it came from (env var name or file path), for messages

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(_stdlib_secrets.token_bytes(_KEY_LEN), source="generated")

    @property
    def fingerprint(self) -> str:
        """8 hex digits identifying the key (an HMAC of it, not part of it)."""
        return self._fingerprint

    def __repr__(self) -> str:
        return f"MasterKey(fingerprint={self._fingerprint}, source={self.source!r})"

    def encrypt(self, plaintext: bytes, *, context: str) -> str:
        """Seal `plaintext`; `context` (e.g. "meter:M1:auth_key") must match on decrypt."""
        nonce = os.urandom(_NONCE_LEN)
        sealed = self._aead.encrypt(nonce, plaintext, context.encode())
        body = base64.b64encode(nonce + sealed).decode("ascii")
        return f"{_TOKEN_VERSION}:{self._fingerprint}:{body}"

    def decrypt(self, token: str, *, context: str, what: str | None = None) -> bytes:
        """Open a token from `encrypt`. `what` names the secret in errors (e.g. "meter M1
        auth_key"); the error never contains the token or the key."""
        label = what or context
        parts = token.split(":", 2)
        if len(parts) != 3 or parts[0] != _TOKEN_VERSION:
            raise SecretsError(f"{label}: stored secret is not in a known format")
        _, fingerprint, body = parts
        if fingerprint != self._fingerprint:
            raise SecretsError(
                f"{label}: sealed under master key {fingerprint}, but the current master key "
                f"({self.source}) is {self._fingerprint}: wrong master key"
            )
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise SecretsError(f"{label}: stored secret is corrupt") from None
        if len(raw) < _NONCE_LEN + 16:
            raise SecretsError(f"{label}: stored secret is corrupt")
        try:
            return self._aead.decrypt(raw[:_NONCE_LEN], raw[_NONCE_LEN:], context.encode())
        except InvalidTag:
            raise SecretsError(
                f"{label}: cannot decrypt (wrong master key, or the stored secret was altered "
                "or belongs to another meter)"
            ) from None


def parse_master_key(text: str | bytes, source: str) -> MasterKey:
    """Accept 32 raw bytes, 64 hex digits or base64 of 32 bytes. Errors never echo the key."""
    if isinstance(text, bytes):
        if len(text) == _KEY_LEN:
            return MasterKey(text, source)
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise SecretsError(
                f"{source}: master key must be 32 bytes, 64 hex digits or base64 of 32 bytes"
            ) from None
    stripped = "".join(text.split())
    key: bytes | None = None
    if len(stripped) == 2 * _KEY_LEN:
        try:
            key = bytes.fromhex(stripped)
        except ValueError:
            key = None
    if key is None:
        try:
            decoded = base64.b64decode(stripped, validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        if len(decoded) == _KEY_LEN:
            key = decoded
    if key is None:
        raise SecretsError(
            f"{source}: master key must be 32 bytes, given as 64 hex digits or base64"
        )
    return MasterKey(key, source)


def default_key_file(database_url: str) -> Path | None:
    """Where a generated master key lives: next to a SQLite database file. None when there
    is no such file (in-memory SQLite, PostgreSQL)."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if not url.get_backend_name() == "sqlite":
        return None
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    path = Path(database)
    return path.with_name(path.name + ".key")


def _read_key_file(path: Path) -> MasterKey:
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except FileNotFoundError:
        raise SecretsError(
            f"security.master_key_file: {path} does not exist (create one with: "
            f"head -c 32 /dev/urandom | xxd -p -c 64 > {path} && chmod 600 {path})"
        ) from None
    except OSError as exc:
        raise SecretsError(
            f"security.master_key_file: cannot read {path}: {exc.strerror}"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("master key file readable by others", path=str(path), mode=oct(mode & 0o777))
    if len(data) == _KEY_LEN:
        return MasterKey(data, str(path))
    return parse_master_key(data, str(path))


def _generate_key_file(path: Path) -> MasterKey:
    """Create the key file atomically with 0600 perms; if another process won the race,
    use its key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = _stdlib_secrets.token_bytes(_KEY_LEN)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{_stdlib_secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(key.hex() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _read_key_file(path)
    finally:
        tmp.unlink(missing_ok=True)
    log.warning(
        "generated a new master key file; back it up: without it the stored meter keys are lost",
        path=str(path),
    )
    return MasterKey(key, str(path))


def load_master_key(
    *,
    key_file: Path | None = None,
    database_url: str | None = None,
    environ: Mapping[str, str] | None = None,
    generate: bool = True,
) -> MasterKey:
    """The master key, from (in order) HEADEND_MASTER_KEY, `key_file`, or a key file next to
    the SQLite database (generated on first use when `generate`).

    PostgreSQL deployments must give the key explicitly: several head-end hosts generating
    their own keys would each seal secrets the others cannot read."""
    env = os.environ if environ is None else environ
    value = env.get(MASTER_KEY_ENV)
    if value:
        return parse_master_key(value, MASTER_KEY_ENV)
    if key_file is not None:
        return _read_key_file(key_file)
    if database_url is not None:
        default = default_key_file(database_url)
        if default is not None:
            if default.exists():
                return _read_key_file(default)
            if generate:
                return _generate_key_file(default)
        elif database_url.startswith("sqlite") and generate:
            log.warning("in-memory database: using a throw-away master key")
            return MasterKey.generate()
    raise SecretsError(
        f"no master key: set {MASTER_KEY_ENV} (64 hex digits) or security.master_key_file"
    )
