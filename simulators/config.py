"""What one simulated meter is: its identity, where it listens, its credentials and its faults.

Credentials are derived from (seed, index) so that a fleet restarted with the same seed hands
the head-end the same inventory; secrets stay out of reprs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum


class Security(StrEnum):
    """Which association the inventory hands the head-end (all three always exist)."""

    NONE = "none"
    LLS = "lls"
    HLS_GMAC = "hls-gmac"


# Client SAPs the simulated meter knows: 16 is the public client of the Green Book (DLMS UA
# 1000-2); 32 (reader, LLS) and 1 (management, HLS-GMAC) as README.md's dlms-sim section says.
PUBLIC_CLIENT_SAP = 16
READER_CLIENT_SAP = 32
MANAGEMENT_CLIENT_SAP = 1

CLIENT_SAP_FOR_SECURITY = {
    Security.NONE: PUBLIC_CLIENT_SAP,
    Security.LLS: READER_CLIENT_SAP,
    Security.HLS_GMAC: MANAGEMENT_CLIENT_SAP,
}


@dataclass(slots=True)
class Faults:
    """Faults injected at run time; the fleet's control interface mutates these in place.

    Transport faults (latency, drops, corruption, closes, offline) are applied by the servers;
    the meter model applies refuse_association, relay_stuck, relay_failure and clock drift."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    drop_rate: float = 0.0
    corrupt_rate: float = 0.0
    close_mid_session_rate: float = 0.0
    refuse_association: bool = False
    relay_stuck: bool = False
    relay_failure: bool = False
    clock_drift_s_per_day: float = 0.0
    offline: bool = False
    offline_windows: list[tuple[float, float]] = field(default_factory=list)


PUSH_TRANSPORTS = ("tcp", "udp", "hdlc")
DEFAULT_PUSH_INTERVAL_S = 60.0
DEFAULT_PUSH_MAX_INFO = 128  # HDLC's default information field length (IEC 62056-46)


@dataclass(frozen=True, slots=True)
class PushSpec:
    """Where and how meters push (`dlms-sim --push-to`), shared by every meter of a fleet.

    `transport`: "tcp" (the wrapper over a TCP connection the meter opens and keeps, serving
    the head-end's requests on it), "udp" (wrapper datagrams) or "hdlc" (UI frames over a TCP
    connection, served like "tcp"). `inbound_only`: the meter listens nowhere; the push
    connection is its only way in, opened at start and again whenever it is lost.
    `hdlc_max_info` is the UI frame size while no link is set up (a link's SNRM decides
    otherwise). `retries` and `repetition_delay_s` are the Push setup's number_of_retries and
    repetition_delay: a push that cannot be delivered is tried that many more times."""

    host: str
    port: int
    interval_s: float = DEFAULT_PUSH_INTERVAL_S
    transport: str = "tcp"
    inbound_only: bool = False
    hdlc_max_info: int = DEFAULT_PUSH_MAX_INFO
    retries: int = 2
    repetition_delay_s: float = 5.0

    def __post_init__(self) -> None:
        if self.transport not in PUSH_TRANSPORTS:
            raise ValueError(f"push transport must be one of {', '.join(PUSH_TRANSPORTS)}")
        if not 0 < self.port < 65536:
            raise ValueError(f"push port {self.port} is not a TCP/UDP port")
        if self.interval_s < 0:
            raise ValueError("push interval must be >= 0 seconds (0 = event pushes only)")
        if self.inbound_only and self.transport == "udp":
            raise ValueError("--inbound-only needs a connection: push over tcp or hdlc")
        if not 16 <= self.hdlc_max_info <= 2030:
            raise ValueError("HDLC push frame size must be between 16 and 2030 bytes")

    @property
    def destination(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @classmethod
    def parse_destination(cls, text: str) -> tuple[str, int]:
        """HOST:PORT (or [V6]:PORT) as --push-to takes it."""
        host, sep, port = text.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"--push-to: {text!r} is not HOST:PORT")
        return host, int(port)


@dataclass(slots=True)
class MeterConfig:
    index: int
    meter_id: str
    transport: str = "wrapper"  # "wrapper" | "hdlc" | "serial"
    host: str = "127.0.0.1"
    port: int = 4059
    security: Security = Security.NONE
    password: bytes = field(default=b"", repr=False)
    auth_key: bytes = field(default=b"", repr=False)
    enc_key: bytes = field(default=b"", repr=False)
    system_title: bytes = b"SIM\x00\x00\x00\x00\x00"
    server_logical: int = 1
    server_physical: int = 16
    control_mode: int = 2
    seed: int = 0
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    faults: Faults = field(default_factory=Faults)
    # Local time = UTC + utc_offset_min (the clock's deviation is its negative).
    utc_offset_min: int = 0
    push: PushSpec | None = None  # where the meter pushes to, if anywhere

    @property
    def client_sap(self) -> int:
        """The client SAP the inventory hands the head-end for this meter's security."""
        return CLIENT_SAP_FOR_SECURITY[self.security]

    @classmethod
    def create(
        cls,
        index: int,
        *,
        seed: int = 0,
        transport: str = "wrapper",
        host: str = "127.0.0.1",
        port: int = 4059,
        security: Security | str = Security.NONE,
        control_mode: int = 2,
        latency_ms: float = 0.0,
        jitter_ms: float = 0.0,
        utc_offset_min: int = 0,
    ) -> MeterConfig:
        """A meter with deterministic identity and credentials for (seed, index)."""
        password, auth_key, enc_key, system_title = derive_credentials(seed, index)
        return cls(
            index=index,
            meter_id=meter_id_for(seed, index),
            transport=transport,
            host=host,
            port=port,
            security=Security(security),
            password=password,
            auth_key=auth_key,
            enc_key=enc_key,
            system_title=system_title,
            server_logical=1,
            server_physical=16 + index % 10000,
            control_mode=control_mode,
            seed=seed,
            latency_ms=latency_ms,
            jitter_ms=jitter_ms,
            faults=Faults(latency_ms=latency_ms, jitter_ms=jitter_ms),
            utc_offset_min=utc_offset_min,
        )


def meter_id_for(seed: int, index: int) -> str:
    """The serial number (0.0.96.1.0.255): SIM + 3-digit seed + 7-digit index."""
    return f"SIM{seed % 1000:03d}{index:07d}"


def derive_credentials(seed: int, index: int) -> tuple[bytes, bytes, bytes, bytes]:
    """(LLS password, authentication key, encryption key, server system title) for a meter.

    A hash of (seed, index): reproducible across runs, different for every meter. The password
    is 8 printable characters; the system title is the FLAG-style id "SIM" + 5 bytes."""
    digest = hashlib.sha256(f"dlms-sim/{seed}/{index}".encode()).digest()
    alphabet = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
    password = bytes(alphabet[b % len(alphabet)] for b in digest[:8])
    keys = hashlib.sha256(digest + b"keys").digest()
    auth_key, enc_key = keys[:16], keys[16:]
    system_title = b"SIM" + (index & 0xFFFFFFFF).to_bytes(4, "big") + bytes((seed & 0xFF,))
    return password, auth_key, enc_key, system_title
