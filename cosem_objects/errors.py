"""Errors raised by the codec and protocol cores.

Every decoder of untrusted bytes raises only ProtocolError (or a subclass), so callers can
catch one type at the edge and keep running."""

from __future__ import annotations


class ProtocolError(Exception):
    """Bytes that do not follow the protocol: malformed, truncated, out of range or unexpected."""


class DecodeError(ProtocolError):
    """A-XDR, APDU or frame bytes that cannot be decoded."""


class SecurityError(ProtocolError):
    """Ciphering failed: wrong key, bad tag, replayed invocation counter."""


class AuthenticationError(SecurityError):
    """The peer refused our credentials, or its HLS reply does not verify."""
