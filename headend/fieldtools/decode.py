"""`headend decode`: a captured byte stream to every APDU in it, with its values. Sans-IO, pure.

The stream is what a field engineer copies from a probe log or a capture: HDLC frames (either
direction, possibly segmented), IEC 62056-47 wrapper frames, or a bare APDU. The outer layer is
told from the first byte (0x7E: HDLC; 00 01 and a length that fits: wrapper; else an APDU), the
HDLC segments and general-block-transfer blocks are joined, GET replies sent in blocks are joined
into their Data, and ciphered APDUs are deciphered with the keys given.

A tag that does not verify is an error, never a decode: the APDU is reported as failed and its
plaintext is not shown. Without an authentication key a tag cannot be checked at all (HAN ports
publish only the encryption key); then the APDU is deciphered and marked `tag_ok: null` with a
warning saying so. Nothing here raises on bad input: every problem becomes a line in
`DecodeReport.errors`, so a capture with one bad frame still shows the good ones."""

from __future__ import annotations

import struct
from typing import Any

from cosem_objects.acse import AARE, AARQ
from cosem_objects.apdu import GbtReassembler, GeneralBlockTransfer, GetResponseWithBlock
from cosem_objects.axdr import decode_data_all
from cosem_objects.data import Data
from cosem_objects.dates import CosemDateTime
from cosem_objects.decode import decode_apdu
from cosem_objects.errors import DecodeError, ProtocolError, SecurityError
from cosem_objects.security import (
    GENERAL_GLO_CIPHERING,
    PLAIN_TAGS,
    GeneralGloCiphering,
    GloCipheredApdu,
    SecurityControl,
    SecurityKeys,
    decrypt,
    decrypt_unauthenticated,
    security_json,
    unwrap_service_specific,
)
from drivers.wrapper import WRAPPER_VERSION, WrapperReader
from headend.fieldtools.hdlc_join import HdlcStream, join_hdlc
from headend.fieldtools.hexinput import HexInput
from headend.fieldtools.report import DecodedApdu, DecodeKeys, DecodeReport, frame_json
from headend.fieldtools.values import datetime_text

__all__ = ["DecodeKeys", "DecodeReport", "DecodedApdu", "decode_input", "detect_layer"]

GENERAL_DED_CIPHERING = 0xDC
GBT_TAG = 0xE0
MAX_DEPTH = 4  # ciphering inside block transfer inside ciphering ... a loop would be hostile
_REQUEST_GLO_TAGS = frozenset({0x21, 0x25, 0x26, 0xC8, 0xC9, 0xCB})  # sent by the client
_DECODE_ERRORS = (ProtocolError, ValueError, IndexError, struct.error, OverflowError)


def detect_layer(data: bytes) -> str:
    if data[:1] == b"\x7e":
        return "hdlc"
    if len(data) >= 8 and int.from_bytes(data[0:2], "big") == WRAPPER_VERSION:
        length = int.from_bytes(data[6:8], "big")
        if 0 < length <= len(data) - 8:
            return "wrapper"
    return "apdu"


def decode_input(source: HexInput, keys: DecodeKeys | None = None) -> DecodeReport:
    """Every layer of `source` decoded; never raises on bad bytes."""
    data = source.data
    report = DecodeReport(layer=detect_layer(data))
    decoder = _Decoder(report, keys or DecodeKeys())
    if report.layer == "hdlc":
        decoder.hdlc(join_hdlc(data))
    elif report.layer == "wrapper":
        decoder.wrapper(data)
    else:
        decoder.bare(source)
    decoder.finish()
    if not report.ok and report.layer == "apdu" and b"\x7e" in data:
        # A capture cut mid-frame (or with a byte of log noise in front): the frames that
        # follow are still worth showing, if the stream holds any.
        framed = DecodeReport(layer="hdlc")
        retry = _Decoder(framed, keys or DecodeKeys())
        stream = join_hdlc(data)
        if stream.frames:
            retry.hdlc(stream)
            retry.finish()
            return framed
    return report


class _Decoder:
    def __init__(self, report: DecodeReport, keys: DecodeKeys) -> None:
        self.report = report
        self.keys = keys
        self.gbt = GbtReassembler()
        self.gbt_numbers: list[int] = []
        self.get_blocks: dict[int, list[GetResponseWithBlock]] = {}
        self.client_title: bytes | None = None
        self.server_title: bytes | None = None

    # -- outer layers ----------------------------------------------------------------------
    def hdlc(self, stream: HdlcStream) -> None:
        self.report.frames = [frame_json(frame) for frame in stream.frames]
        self.report.errors.extend(stream.problems)
        for message in stream.messages:
            self.take(message.info, message.where, ["hdlc"])

    def wrapper(self, data: bytes) -> None:
        reader = WrapperReader()
        try:
            frames = reader.feed(data)
        except DecodeError as exc:
            self.report.errors.append(f"wrapper: {exc}")
            return
        for number, frame in enumerate(frames, start=1):
            self.report.frames.append(
                {
                    "version": frame.version,
                    "src_wport": frame.src_wport,
                    "dst_wport": frame.dst_wport,
                    "length": frame.length,
                }
            )
            self.take(frame.apdu, f"wrapper frame {number}", ["wrapper"])
        if reader.buffered:
            self.report.errors.append(f"{reader.buffered} bytes at the end are not a whole frame")

    def bare(self, source: HexInput) -> None:
        """One APDU; or, when the whole does not decode, one per line/argument."""
        before = len(self.report.errors)
        self.take(source.data, "input", [])
        if self.report.apdus or len(source.chunks) == 1:
            return
        del self.report.errors[before:]
        for number, chunk in enumerate(source.chunks, start=1):
            self.take(chunk, f"input line {number}", [])

    def finish(self) -> None:
        if self.gbt.in_progress:
            numbers = ", ".join(map(str, self.gbt_numbers))
            self.report.errors.append(
                f"general-block-transfer never finished: blocks {numbers}, last block missing"
            )
        for invoke, blocks in self.get_blocks.items():
            self.report.errors.append(
                f"GET reply (invoke id {invoke}) in blocks never finished: "
                f"blocks {[b.block_number for b in blocks]}, last block missing"
            )

    # -- APDUs -----------------------------------------------------------------------------
    def take(self, apdu: bytes, source: str, layers: list[str], depth: int = 0) -> None:
        if not apdu:
            self.report.errors.append(f"{source}: empty APDU")
            return
        if depth > MAX_DEPTH:
            self.report.errors.append(f"{source}: layers nested deeper than {MAX_DEPTH}")
            return
        tag = apdu[0]
        try:
            if tag == GBT_TAG:
                self._block(apdu, source, layers, depth)
            elif tag in (GENERAL_GLO_CIPHERING, GENERAL_DED_CIPHERING):
                self._general_ciphered(apdu, source, layers, depth)
            elif tag in PLAIN_TAGS:
                self._glo(apdu, source, layers, depth)
            else:
                self._plain(apdu, source, layers)
        except _DECODE_ERRORS as exc:
            self.report.errors.append(f"{source}: {_describe(exc)}")

    def _block(self, apdu: bytes, source: str, layers: list[str], depth: int) -> None:
        block = GeneralBlockTransfer.from_bytes(apdu)
        header = block.to_json()
        header["source"] = source
        self.report.blocks.append(header)
        if block.block_number == 1:
            self.gbt_numbers = []
        self.gbt_numbers.append(block.block_number)
        whole = self.gbt.feed(block)
        if whole is not None:
            numbers, self.gbt_numbers = self.gbt_numbers, []
            where = f"{source} (general-block-transfer blocks {numbers})"
            self.take(whole, where, [*layers, "general-block-transfer"], depth + 1)

    def _general_ciphered(self, apdu: bytes, source: str, layers: list[str], depth: int) -> None:
        name = (
            "general-glo-ciphering" if apdu[0] == GENERAL_GLO_CIPHERING else "general-ded-ciphering"
        )
        # Both share one layout (tag, system title, length, SC, IC, payload); only the key
        # differs, and the engineer hands us the one to use.
        ciphered = GeneralGloCiphering.from_bytes(bytes((GENERAL_GLO_CIPHERING,)) + apdu[1:])
        self._deciphered(
            apdu,
            source,
            [*layers, name],
            depth,
            ciphered.system_title,
            ciphered.security_control,
            ciphered.invocation_counter,
            ciphered.payload,
        )

    def _glo(self, apdu: bytes, source: str, layers: list[str], depth: int) -> None:
        ciphered = GloCipheredApdu.from_bytes(apdu)
        from_client = apdu[0] in _REQUEST_GLO_TAGS
        learnt = self.client_title if from_client else self.server_title
        title = self.keys.system_title or learnt
        layer = f"glo-ciphered 0x{apdu[0]:02X}"
        if title is None:
            sender = "client" if from_client else "meter"
            raise SecurityError(
                f"{layer}: the {sender}'s system title is not in this APDU and no AARQ/AARE "
                "came before it: give --system-title"
            )
        self._deciphered(
            apdu,
            source,
            [*layers, layer],
            depth,
            title,
            ciphered.security_control,
            ciphered.invocation_counter,
            ciphered.payload,
        )

    def _deciphered(
        self,
        apdu: bytes,
        source: str,
        layers: list[str],
        depth: int,
        title: bytes,
        sc: int,
        ic: int,
        payload: bytes,
    ) -> None:
        security = security_json(sc, title, ic, payload)
        plaintext, tag_ok, warning = self._decipher(sc, title, ic, payload)
        security["tag_ok"] = tag_ok
        before = len(self.report.apdus)
        self.take(plaintext, source, layers, depth + 1)
        for decoded in self.report.apdus[before:]:
            if decoded.security is None:
                decoded.security = security
                decoded.plaintext_hex = plaintext.hex().upper()
                decoded.tag = apdu[0]
                decoded.apdu_hex = apdu.hex().upper()
                if warning:
                    decoded.warnings.append(warning)

    def _decipher(
        self, sc: int, title: bytes, ic: int, payload: bytes
    ) -> tuple[bytes, bool | None, str | None]:
        """(plaintext, tag_ok, warning). SecurityError when the tag does not verify."""
        control = SecurityControl.from_byte(sc)
        enc, auth = self.keys.enc_key, self.keys.auth_key
        if control.authenticated and auth is not None and enc is not None:
            try:
                return decrypt(sc, title, ic, SecurityKeys(enc, auth), payload), True, None
            except SecurityError as exc:
                raise SecurityError(
                    f"{exc} with the given keys (system title {title.hex().upper()}, "
                    f"invocation counter {ic}): not decoded"
                ) from None
        if control.encrypted and enc is None:
            raise SecurityError(f"ciphered APDU (security control 0x{sc:02X}) needs --enc-key")
        plaintext = decrypt_unauthenticated(sc, title, ic, enc or bytes(16), payload)
        if not control.authenticated:
            return plaintext, None, None
        missing = "--auth-key" if auth is None else "--enc-key"
        return plaintext, None, f"authentication tag NOT checked (no {missing}): unverified"

    def _plain(self, apdu: bytes, source: str, layers: list[str]) -> None:
        decoded = decode_apdu(apdu)
        name_layers = list(layers)
        json_form: dict[str, Any]
        plaintext: str | None = None
        if isinstance(decoded, AARQ | AARE):
            json_form, plaintext = self._acse(decoded)
        else:
            json_form = decoded.to_json()
        entry = DecodedApdu(
            source=source,
            layers=name_layers,
            tag=apdu[0],
            apdu_hex=apdu.hex().upper(),
            json=json_form,
            data=_data_items(decoded),
            datetime=_stamp(decoded),
            plaintext_hex=plaintext,
        )
        self.report.apdus.append(entry)
        if isinstance(decoded, GetResponseWithBlock):
            self._get_block(decoded, source, name_layers)

    def _acse(self, apdu: AARQ | AARE) -> tuple[dict[str, Any], str | None]:
        """The JSON form, and the deciphered xDLMS initiate when it was ciphered (an AARQ's
        is hidden unless secrets are shown: it carries the dedicated key)."""
        keys = self.keys.security_keys()
        redact = not self.keys.show_secrets
        if isinstance(apdu, AARQ):
            self.client_title = apdu.calling_ap_title or self.client_title
            out = apdu.to_json(keys, redact=redact)
            glo = out.get("glo_initiate_request")
        else:
            self.server_title = apdu.responding_ap_title or self.server_title
            out = apdu.to_json(keys)
            glo = out.get("glo_initiate_response")
        if isinstance(glo, dict) and glo.get("tag_ok") is False:
            raise SecurityError(
                "the ciphered xDLMS initiate in the "
                f"{out['type']} does not verify with the given keys: not decoded"
            )
        if out.get("user_information_error"):
            raise DecodeError(f"{out['type']} user-information: {out['user_information_error']}")
        plaintext = None
        title = apdu.calling_ap_title if isinstance(apdu, AARQ) else apdu.responding_ap_title
        if (
            isinstance(glo, dict)
            and keys is not None
            and title is not None
            and apdu.user_information
        ):
            plain, _ = unwrap_service_specific(apdu.user_information, title, keys)
            plaintext = plain.hex().upper() if not redact or isinstance(apdu, AARE) else "<hidden>"
        return out, plaintext

    def _get_block(self, block: GetResponseWithBlock, source: str, layers: list[str]) -> None:
        invoke = block.invoke_id_and_priority & 0x0F
        blocks = self.get_blocks.setdefault(invoke, [])
        if isinstance(block.raw_data, bytes):
            if block.block_number == 1:
                blocks.clear()
            blocks.append(block)
        if not block.last_block:
            return
        del self.get_blocks[invoke]
        numbers = [b.block_number for b in blocks]
        if numbers != list(range(1, len(numbers) + 1)) or not numbers:
            self.report.errors.append(f"{source}: GET reply blocks {numbers} do not join")
            return
        raw = b"".join(b.raw_data for b in blocks if isinstance(b.raw_data, bytes))
        value = decode_data_all(raw)
        self.report.apdus.append(
            DecodedApdu(
                source=f"{source} (GET blocks {numbers})",
                layers=[*layers, "get-response-with-datablock"],
                tag=block.to_bytes()[0],
                apdu_hex="",
                json={"type": "get-response-joined", "invoke_id": invoke, "blocks": numbers},
                data=[("result", value)],
            )
        )


def _stamp(apdu: Any) -> str | None:
    for name in ("date_time", "time"):
        value = getattr(apdu, name, None)
        if isinstance(value, CosemDateTime):
            return datetime_text(value)
    return None


def _data_items(apdu: Any) -> list[tuple[str, Data]]:
    """Every Data an APDU carries, by attribute name (lists numbered)."""
    found: list[tuple[str, Data]] = []
    for name in getattr(type(apdu), "__slots__", ()):
        value = getattr(apdu, name, None)
        if isinstance(value, Data):
            found.append((name, value))
        elif isinstance(value, tuple):
            for index, item in enumerate(value):
                if isinstance(item, Data):
                    found.append((f"{name}[{index}]", item))
                elif hasattr(type(item), "__slots__"):
                    found.extend((f"{name}[{index}].{n}", d) for n, d in _data_items(item))
    return found


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())
