"""DLMS/COSEM meter simulator: meter model, server-side sessions, fleet and CLI."""
