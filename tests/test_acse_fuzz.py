"""Untrusted bytes into every ACSE and security decoder: random and mutated input yields a value
or a ProtocolError subclass, never another exception, and in bounded time (pytest-timeout)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vectors import VECTORS_FILE, load_vectors

from cosem_objects.acse import (
    AARE,
    AARQ,
    RLRE,
    RLRQ,
    InitiateRequest,
    InitiateResponse,
    decode_acse,
)
from cosem_objects.errors import ProtocolError
from cosem_objects.security import (
    GeneralGloCiphering,
    GloCipheredApdu,
    SecurityControl,
    SecurityKeys,
    decrypt,
    decrypt_unauthenticated,
    unwrap_general_glo,
    unwrap_service_specific,
    verify_hls_gmac_reply,
)

pytestmark = pytest.mark.timeout(60)

KEYS = SecurityKeys(
    bytes.fromhex("000102030405060708090A0B0C0D0E0F"),
    bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"),
)
ST = bytes.fromhex("4D4D4D0000BC614E")
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Seeds: well-formed examples of every decoder's input (so mutations reach deep code paths).
SEEDS = [
    "601DA109060760857405080101BE10040E01000000065F1F0400001E1DFFFF",
    "6036A1090607608574050801018A0207808B0760857405080205AC0A80084B35366956616759"
    "BE10040E01000000065F1F0400007E1F04B0",
    "6066A109060760857405080103A60A04084D4D4D0000BC614E8A0207808B0760857405080201AC0A8008"
    "3132333435363738BE34043221303001234567801302FF8A7874133D414CED25B42534D28DB0047720606B"
    "175BD52211BE6841DB204D39EE6FDB8E356855",
    "6142A109060760857405080101A203020100A305A10302010E88020780890760857405080205AA0A8008"
    "503677524A323146BE10040E0800065F1F040000501F01F40007",
    "611FA109060760857405080101A203020101A305A103020101BE0604040E010601",
    "6203800100",
    "6303800100",
    "C81E3001234567411312FF935A47566827C467BC7D825C3BE4A77C3FCC056B6B",
    "C8122001234567411312FF935A47566827C467BC",
    "DB082F192291991641033B30000001E5025CE9D2271FD78BE8C204211A916A9D7F587E0A7A814CADEA89E95"
    "93F01F92EA8C087B5BDFDEFEAB6BECF282DFE49C08F5BE6DC8400",
    "10000000011A52FE7DD3E72748973C1E28",
    "01011000112233445566778899AABBCCDDEEFF0000065F1F0400007E1F04B0",
    "0800065F1F0400001E1D04C80007",
]


def _vector_seeds() -> list[bytes]:
    """The real-meter APDUs too, when the shared vectors are present."""
    if not VECTORS_FILE.is_file():
        return []
    out = []
    for entry in load_vectors():
        for key in ("apdu_hex", "reassembled_apdu_hex"):
            if entry["expect"].get(key):
                out.append(bytes.fromhex(entry["expect"][key]))
        if entry["layer"] in ("apdu", "ciphered-apdu", "crypto") and isinstance(entry["hex"], str):
            out.append(bytes.fromhex(entry["hex"]))
    return out


SEED_BYTES = [bytes.fromhex(s) for s in SEEDS] + _vector_seeds()


def _exercise(apdu: Any) -> None:
    """What callers do with a decoded value: re-encode it, dump it, look inside."""
    raw = apdu.to_bytes()
    assert type(apdu).from_bytes(raw) == apdu
    if isinstance(apdu, AARQ | AARE):
        apdu.to_json(KEYS)
        apdu.to_json()
        repr(apdu)
    if isinstance(apdu, AARQ):
        _ = apdu.initiate_request
        apdu.decrypt_initiate_request(KEYS)
    if isinstance(apdu, AARE):
        _ = apdu.initiate_response
        _ = apdu.confirmed_service_error
        apdu.decrypt_initiate_response(KEYS)
    if isinstance(apdu, GeneralGloCiphering):
        apdu.security_json(KEYS)
    if isinstance(apdu, GloCipheredApdu):
        apdu.security_json(ST, KEYS)


DECODERS: list[tuple[str, Callable[[bytes], Any]]] = [
    ("decode_acse", decode_acse),
    ("AARQ", AARQ.from_bytes),
    ("AARE", AARE.from_bytes),
    ("RLRQ", RLRQ.from_bytes),
    ("RLRE", RLRE.from_bytes),
    ("InitiateRequest", InitiateRequest.from_bytes),
    ("InitiateResponse", InitiateResponse.from_bytes),
    ("GloCipheredApdu", GloCipheredApdu.from_bytes),
    ("GeneralGloCiphering", GeneralGloCiphering.from_bytes),
    ("unwrap_service_specific", lambda b: unwrap_service_specific(b, ST, KEYS)),
    ("unwrap_general_glo", lambda b: unwrap_general_glo(b, KEYS)),
    ("verify_hls_gmac_reply", lambda b: verify_hls_gmac_reply(KEYS, ST, b"P6wRJ21F", b)),
    ("decrypt", lambda b: decrypt(b[0] if b else 0x30, ST, 1, KEYS, b[1:])),
    (
        "decrypt_unauthenticated",
        lambda b: decrypt_unauthenticated(b[0] if b else 0x30, ST, 1, KEYS.encryption_key, b[1:]),
    ),
    ("SecurityControl", lambda b: SecurityControl.from_byte(b[0] if b else 0)),
]


def _feed(decode: Callable[[bytes], Any], data: bytes) -> None:
    try:
        result = decode(data)
    except ProtocolError:
        return
    try:
        if hasattr(result, "to_bytes") and hasattr(type(result), "from_bytes"):
            _exercise(result)
    except ProtocolError:
        return


def _mutate(seed: bytes, ops: list[tuple[int, int, int]]) -> bytes:
    data = bytearray(seed)
    for kind, position, value in ops:
        if not data:
            data.append(value)
            continue
        i = position % len(data)
        if kind == 0:
            data[i] ^= value or 1
        elif kind == 1:
            data.insert(i, value)
        elif kind == 2:
            del data[i]
        elif kind == 3:
            del data[i:]
        else:
            data[i] = (0x80, 0x81, 0x82, 0x84, 0xFF, 0x00, 0x7F)[value % 7]  # length forms
    return bytes(data)


mutations = st.lists(
    st.tuples(st.integers(0, 4), st.integers(0, 2**16), st.integers(0, 255)),
    min_size=1,
    max_size=6,
)


@pytest.mark.parametrize(("name", "decode"), DECODERS, ids=[n for n, _ in DECODERS])
@FUZZ
@given(data=st.binary(max_size=300))
def test_random_bytes(name: str, decode: Callable[[bytes], Any], data: bytes) -> None:
    _feed(decode, data)


@pytest.mark.parametrize(("name", "decode"), DECODERS, ids=[n for n, _ in DECODERS])
@FUZZ
@given(seed=st.sampled_from(SEED_BYTES), ops=mutations)
def test_mutated_seeds(
    name: str, decode: Callable[[bytes], Any], seed: bytes, ops: list[tuple[int, int, int]]
) -> None:
    _feed(decode, _mutate(seed, ops))


@pytest.mark.parametrize(("name", "decode"), DECODERS, ids=[n for n, _ in DECODERS])
def test_every_prefix_of_every_seed(name: str, decode: Callable[[bytes], Any]) -> None:
    for seed in SEED_BYTES:
        for end in range(len(seed) + 1):
            _feed(decode, seed[:end])


def test_huge_inputs_are_linear() -> None:
    """Megabyte inputs: a huge unknown field, many small unknown fields, a lying length."""
    filler = b"\x9d\x83\x10\x00\x00" + bytes(0x100000)
    body = bytes.fromhex("A109060760857405080101") + filler
    huge = b"\x60\x83" + len(body).to_bytes(3, "big") + body
    assert AARQ.from_bytes(huge) == AARQ()
    many = bytes.fromhex("A109060760857405080101") + b"\x9d\x00" * 200_000
    assert AARQ.from_bytes(b"\x60\x83" + len(many).to_bytes(3, "big") + many) == AARQ()
    _feed(decode_acse, b"\x60\x84\xff\xff\xff\xff" + bytes(1000))
    _feed(unwrap_general_glo_bound, b"\xdb\x08" + ST + b"\x84\xff\xff\xff\xff" + bytes(1000))


def unwrap_general_glo_bound(data: bytes) -> Any:
    return unwrap_general_glo(data, KEYS)
