"""Transport errors. They derive from the built-in OSError family, so code that already treats
`OSError`/`TimeoutError` as "the meter is unreachable" handles them without knowing them."""

from __future__ import annotations

from cosem_objects.errors import ProtocolError


class TransportError(ConnectionError):
    """The line or link to the meter failed."""


class LinkTimeout(TransportError, TimeoutError):
    """Nothing usable arrived in time (silent line, babbling line, lost frames)."""


class ConnectionRefusedByPeer(TransportError):
    """The meter refused the link (HDLC DM to SNRM)."""


class LinkClosed(TransportError):
    """The peer closed the connection or dropped the link (EOF, DM, DISC) mid-session."""


class LinkProtocolError(TransportError, ProtocolError):
    """The peer broke the link protocol (FRMR, wrong sequence numbers, bad mode E answer)."""
