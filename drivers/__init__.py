"""Framing, transports and the asyncio client session: everything between a socket or serial
line and COSEM objects. Protocol logic is sans-IO; asyncio lives in transports/ and session.py."""
