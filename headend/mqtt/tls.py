"""The client TLS context that ``[mqtt.tls]`` asks for.

Kept apart from ``headend.config`` (which only reads and checks the settings) so that loading a
config file never touches ``ssl``, and apart from the bridge so that a bad CA or key file fails
when the bridge is made, before anything connects.
"""

from __future__ import annotations

import ssl

from headend.config import TlsConfig

__all__ = ["tls_context_for"]


def tls_context_for(tls: TlsConfig) -> ssl.SSLContext | None:
    """The client TLS context, or None for plain TCP."""
    if not tls.active:
        return None
    context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    if tls.cert_file:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    if tls.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
