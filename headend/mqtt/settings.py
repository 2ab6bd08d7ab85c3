"""What the bridge needs to know about its broker.

``headend.config.MqttConfig`` is the real ``[mqtt]`` section; the bridge takes any object of the
same shape (``MqttSettingsLike``), so this package does not depend on the config loader.
``MqttSettings`` is the plain stand-alone version for tests, the demo and library callers.
The password may be a plain string or a ``headend.meters.secrets.Secret``
(anything with ``reveal()``).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

__all__ = ["MqttSettings", "MqttSettingsLike", "MqttTls", "reveal_password", "tls_context_for"]


class MqttSettingsLike(Protocol):
    @property
    def host(self) -> str | None: ...
    @property
    def port(self) -> int: ...
    @property
    def client_id(self) -> str: ...
    @property
    def billing_prefix(self) -> str: ...
    @property
    def headend_prefix(self) -> str: ...
    @property
    def username(self) -> str | None: ...
    @property
    def password(self) -> object:
        """None, a str, or a secret with ``reveal() -> str``."""

    @property
    def keepalive(self) -> int: ...
    @property
    def tls(self) -> object:
        """Shaped like ``MqttTls`` / ``headend.config.TlsConfig``."""


@dataclass(frozen=True, slots=True)
class MqttTls:
    ca_file: Path | str | None = None
    cert_file: Path | str | None = None
    key_file: Path | str | None = None
    insecure: bool = False
    """Skip certificate and host name checks: only for a test broker's self-signed certificate."""
    enabled: bool = False
    """TLS with the system's CA store; also implied by any of the files being set."""

    @property
    def active(self) -> bool:
        return self.enabled or any((self.ca_file, self.cert_file, self.key_file))


@dataclass(frozen=True, slots=True)
class MqttSettings:
    host: str | None = "127.0.0.1"
    """None means: run the embedded broker (``headend.mqtt.broker``)."""
    port: int = 1883
    client_id: str = "headend-1"
    billing_prefix: str = "billing"
    headend_prefix: str = "headend"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    keepalive: int = 60
    tls: MqttTls = field(default_factory=MqttTls)


def reveal_password(password: object) -> str | None:
    if password is None:
        return None
    reveal = getattr(password, "reveal", None)
    value = reveal() if callable(reveal) else password
    if not isinstance(value, str):
        raise TypeError("MQTT password must be a string")
    return value


def tls_context_for(settings: MqttSettingsLike) -> ssl.SSLContext | None:
    """The client TLS context the settings ask for, or None for plain TCP."""
    tls = settings.tls
    if not getattr(tls, "active", False):
        return None
    ca_file = getattr(tls, "ca_file", None)
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    cert_file = getattr(tls, "cert_file", None)
    if cert_file:
        key_file = getattr(tls, "key_file", None)
        context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    if getattr(tls, "insecure", False):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
