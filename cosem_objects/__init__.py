"""COSEM model and codec: OBIS, A-XDR data, interface classes, xDLMS/ACSE APDUs, suite 0.

No I/O lives here: everything takes bytes and returns values (or raises ProtocolError)."""
