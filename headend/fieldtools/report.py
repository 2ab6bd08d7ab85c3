"""What `headend decode` found, as data: the keys given, each decoded APDU with its values,
the frames and blocks it came in, and the problems met. Kept apart from the pipeline
(decode.py) so the CLI and the tests read one shape, the JSON the vectors describe."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cosem_objects.classes import plain_value
from cosem_objects.data import Data
from cosem_objects.errors import DecodeError
from cosem_objects.security import SecurityKeys
from drivers.hdlc import FrameType, HdlcAddress, HdlcFrame, encode_address
from drivers.hdlc.parameters import HdlcParameters
from headend.fieldtools.values import meter_values, typed
from headend.fieldtools.values import rows as value_rows


@dataclass(frozen=True)
class DecodeKeys:
    """What the engineer gave. Kept out of repr: these are a meter's secrets."""

    enc_key: bytes | None = field(default=None, repr=False)
    auth_key: bytes | None = field(default=None, repr=False)
    system_title: bytes | None = None  # for service-specific glo- APDUs, when no AARQ/AARE
    show_secrets: bool = False

    def security_keys(self) -> SecurityKeys | None:
        if self.enc_key is None:
            return None
        return SecurityKeys(self.enc_key, self.auth_key)


@dataclass(slots=True)
class DecodedApdu:
    """One APDU that decoded; `layers` is the path it came by, outermost first."""

    source: str
    layers: list[str]
    tag: int
    apdu_hex: str
    json: dict[str, Any]
    data: list[tuple[str, Data]]
    security: dict[str, Any] | None = None
    plaintext_hex: str | None = None
    warnings: list[str] = field(default_factory=list)
    datetime: str | None = None  # the APDU's own time stamp (a notification's date-time)

    @property
    def type_name(self) -> str:
        return str(self.json.get("type", f"tag 0x{self.tag:02X}"))

    @property
    def values(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for _, item in self.data:
            found.extend(meter_values(item))
        return found

    @property
    def value(self) -> Any:
        """The plain value of a reply with exactly one Data (a GET), else None."""
        return plain_value(self.data[0][1]) if len(self.data) == 1 else None

    def rows(self) -> list[tuple[str, str, str]]:
        out: list[tuple[str, str, str]] = []
        for name, item in self.data:
            out.extend(value_rows(item, name))
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "layers": self.layers,
            "apdu_tag": self.tag,
            "apdu_hex": self.apdu_hex,
            "type": self.type_name,
            "apdu": self.json,
            "security": self.security,
            "plaintext_hex": self.plaintext_hex,
            "datetime": self.datetime,
            "data": {name: typed(item) for name, item in self.data},
            "value": _jsonable(self.value),
            "values": self.values,
            "warnings": self.warnings,
        }


@dataclass(slots=True)
class DecodeReport:
    layer: str = "apdu"
    frames: list[dict[str, Any]] = field(default_factory=list)
    blocks: list[dict[str, Any]] = field(default_factory=list)
    apdus: list[DecodedApdu] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.apdus)

    def reason(self) -> str:
        """Why nothing decoded, in one line."""
        if self.errors:
            more = len(self.errors) - 1
            return self.errors[0] + (f" (and {more} more problems)" if more else "")
        if self.frames:
            kinds = ", ".join(str(f.get("frame_type", "wrapper")) for f in self.frames[:8])
            return f"no APDU in {len(self.frames)} {self.layer} frame(s): {kinds}"
        return "no APDU in the input"

    def to_json(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "ok": self.ok,
            "frames": self.frames,
            "blocks": self.blocks,
            "apdus": [apdu.to_json() for apdu in self.apdus],
            "errors": self.errors,
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex().upper()
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def frame_json(frame: HdlcFrame) -> dict[str, Any]:
    """One HDLC frame in the vectors' `expect["hdlc"]` shape (frames that parsed had good
    check sequences: a bad one never gets here)."""
    info: bytes = frame.info
    out: dict[str, Any] = {
        "format_type": 10,
        "segmented": frame.segmented,
        "length": frame.length,
        "dst": _address_json(frame.dst),
        "src": _address_json(frame.src),
        "control": frame.control,
        "frame_type": frame.frame_type.value,
        "poll_final": frame.poll_final,
        "hcs_ok": True if info else None,
        "fcs_ok": True,
        "info": info.hex().upper() if info else None,
        "llc": frame.llc.hex().upper() if frame.llc else None,
    }
    if frame.send_seq is not None:
        out["send_seq"] = frame.send_seq
    if frame.recv_seq is not None:
        out["recv_seq"] = frame.recv_seq
    if frame.frame_type in (FrameType.SNRM, FrameType.UA) and info:
        try:
            params = HdlcParameters.from_bytes(info)
            out["hdlc_parameters"] = {
                "max_info_tx": params.max_info_tx,
                "max_info_rx": params.max_info_rx,
                "window_tx": params.window_tx,
                "window_rx": params.window_rx,
            }
        except (DecodeError, ValueError):
            pass
    return out


def _address_json(address: HdlcAddress) -> dict[str, Any]:
    return {
        "hex": encode_address(address).hex().upper(),
        "upper": address.upper,
        "lower": address.lower,
    }
