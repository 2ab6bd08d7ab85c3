"""The sans-IO HDLC stream joiner: real captures, segmented UI and I frames, bounds, fuzz."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vectors import load_vectors, vector_by_id, vector_params

from drivers.hdlc.addresses import HdlcAddress
from drivers.hdlc.frames import LLC_RESPONSE, FrameType, HdlcFrame
from drivers.hdlc.stream import HdlcStreamJoiner, JoinedApdu, JoinError, OtherFrame

FUZZ = settings(max_examples=200, deadline=None)
METER = HdlcAddress.server(1, 17)
HEADEND = HdlcAddress.client(16)


def _frames_of(vector: dict[str, Any]) -> list[bytes]:
    hexes = vector["hex"] if isinstance(vector["hex"], list) else [vector["hex"]]
    return [bytes.fromhex(h) for h in hexes]


def _segments(
    apdu: bytes,
    size: int,
    frame_type: FrameType = FrameType.UI,
    src: HdlcAddress = METER,
    dst: HdlcAddress = HEADEND,
    first_seq: int = 0,
) -> list[bytes]:
    """How a meter sends `apdu` in frames of `size` information bytes (LLC in the first)."""
    message = LLC_RESPONSE + apdu
    parts = [message[i : i + size] for i in range(0, len(message), size)]
    return [
        HdlcFrame.make(
            frame_type,
            dst,
            src,
            send_seq=first_seq + index,
            segmented=index < len(parts) - 1,
            info=part,
        ).to_bytes()
        for index, part in enumerate(parts)
    ]


def _apdus(events: list[Any]) -> list[bytes]:
    return [e.apdu for e in events if isinstance(e, JoinedApdu)]


@pytest.mark.parametrize("vector", vector_params("hdlc", lambda v: "apdu_hex" in v["expect"]))
def test_every_hdlc_vector_with_an_apdu_gives_it_back(vector: dict[str, Any]) -> None:
    joiner = HdlcStreamJoiner()
    events = [e for raw in _frames_of(vector) for e in joiner.feed(raw)]
    assert _apdus(events) == [bytes.fromhex(vector["expect"]["apdu_hex"])]
    assert joiner.close() == []


@pytest.mark.parametrize(
    "vector",
    vector_params("hdlc", lambda v: "hdlc" in v["expect"] and "apdu_hex" not in v["expect"]),
)
def test_hdlc_vectors_without_an_apdu_are_other_frames(vector: dict[str, Any]) -> None:
    events = HdlcStreamJoiner().feed(b"".join(_frames_of(vector)))
    assert [type(e) for e in events] == [OtherFrame] * len(_frames_of(vector))


def test_lg_push_frames_come_out_as_their_gbt_blocks_in_order() -> None:
    vector = vector_by_id("v8-lg-e450-enc-message")
    frames = [
        bytes.fromhex(v["hex"])
        for v in load_vectors("hdlc")
        if v["id"].startswith("v8-lg-e450-enc-frame")
    ]
    assert frames == _frames_of(vector)
    # One feed, with idle flags and line noise between the frames, split at odd places.
    stream = b"\x7e\x7e\x00\xff".join(frames) + b"\x01\x02"
    joiner = HdlcStreamJoiner()
    events = [e for i in range(0, len(stream), 37) for e in joiner.feed(stream[i : i + 37])]
    joined = [e for e in events if isinstance(e, JoinedApdu)]
    assert [e.llc for e in joined] == [LLC_RESPONSE, None, None]
    blocks = [e.apdu for e in joined]
    assert [b[0] for b in blocks] == [0xE0, 0xE0, 0xE0]
    assert not [e for e in events if isinstance(e, JoinError)]


def test_a_whole_session_capture_splits_by_direction() -> None:
    frames = [
        raw for v in load_vectors("hdlc") if v["id"].startswith("v2-") for raw in _frames_of(v)
    ]
    events = HdlcStreamJoiner().feed(b"".join(frames))
    expected = [
        bytes.fromhex(v["expect"]["apdu_hex"])
        for v in load_vectors("hdlc")
        if v["id"].startswith("v2-") and "apdu_hex" in v["expect"]
    ]
    assert _apdus(events) == expected


@pytest.mark.parametrize("frame_type", [FrameType.UI, FrameType.I])
def test_segmented_frames_are_joined_and_llc_stripped(frame_type: FrameType) -> None:
    apdu = bytes(range(256)) * 3
    frames = _segments(apdu, 128, frame_type)
    assert len(frames) == 7
    events = HdlcStreamJoiner().feed(b"".join(frames))
    assert len(events) == 1
    joined = events[0]
    assert isinstance(joined, JoinedApdu)
    assert (joined.apdu, joined.frames, joined.frame_type) == (apdu, 7, frame_type)
    assert (joined.src, joined.dst, joined.llc) == (METER, HEADEND, LLC_RESPONSE)


def test_two_meters_interleaved_are_joined_apart() -> None:
    other = HdlcAddress.server(1, 18)
    first = _segments(b"\x0f" + b"A" * 300, 100)
    second = _segments(b"\x0f" + b"B" * 300, 100, src=other)
    stream = b"".join(x for pair in zip(first, second, strict=True) for x in pair)
    events = HdlcStreamJoiner().feed(stream)
    joined = [e for e in events if isinstance(e, JoinedApdu)]
    assert [(e.src, e.apdu[1:2]) for e in joined] == [(METER, b"A"), (other, b"B")]


def test_an_i_frame_sequence_gap_drops_the_message_and_says_so() -> None:
    frames = _segments(b"\x0f" + b"x" * 400, 100, FrameType.I)
    events = HdlcStreamJoiner().feed(b"".join(frames[:2] + frames[3:]))
    errors = [e for e in events if isinstance(e, JoinError)]
    assert len(errors) == 1 and "N(S)=3" in errors[0].reason
    assert errors[0].src == METER
    # What follows the gap is not glued onto the first part.
    assert all(not a.startswith(b"\x0f" + b"x" * 96) for a in _apdus(events))


def test_oversized_message_is_dropped_whole_and_the_next_one_joins() -> None:
    joiner = HdlcStreamJoiner(max_apdu_size=500)
    big = _segments(b"\x0f" + b"y" * 900, 120)
    small = _segments(b"\x0f" + b"z" * 50, 120)
    events = joiner.feed(b"".join(big + small))
    errors = [e for e in events if isinstance(e, JoinError)]
    assert len(errors) == 1 and "500 bytes" in errors[0].reason
    assert _apdus(events) == [b"\x0f" + b"z" * 50]
    assert joiner.buffered <= 1  # at most the flag that may open a next frame


def test_too_many_frames_is_dropped() -> None:
    joiner = HdlcStreamJoiner(max_frames=4)
    events = joiner.feed(b"".join(_segments(b"\x0f" + b"q" * 100, 20)))
    assert _apdus(events) == []
    assert [e.reason for e in events if isinstance(e, JoinError)] == [
        f"segmented message passed {joiner.max_apdu_size} bytes or 4 frames, dropped"
    ]


def test_too_many_messages_at_once_drops_the_oldest() -> None:
    joiner = HdlcStreamJoiner(max_partials=2)
    firsts = [
        _segments(b"\x0f" + b"m" * 100, 60, src=HdlcAddress.server(1, n))[0] for n in (1, 2, 3)
    ]
    events = joiner.feed(b"".join(firsts))
    errors = [e for e in events if isinstance(e, JoinError)]
    assert len(errors) == 1 and errors[0].src == HdlcAddress.server(1, 1)


def test_close_reports_unfinished_messages_and_frames() -> None:
    frames = _segments(b"\x0f" + b"t" * 200, 100)
    joiner = HdlcStreamJoiner()
    assert joiner.feed(frames[0] + frames[1][:10]) == []
    reasons = [e.reason for e in joiner.close() if isinstance(e, JoinError)]
    assert len(reasons) == 2
    assert "inside a frame" in reasons[0] and "before its last segment" in reasons[1]
    assert joiner.buffered == 0


def test_a_corrupted_frame_is_an_error_event_and_the_stream_goes_on() -> None:
    raw = bytearray(_frames_of(vector_by_id("v5-kamstrup-push"))[0])
    raw[40] ^= 0xFF
    good = _frames_of(vector_by_id("v4-aidon-push"))[0]
    events = HdlcStreamJoiner().feed(bytes(raw) + good)
    assert any(isinstance(e, JoinError) and "FCS" in e.reason for e in events)
    assert _apdus(events) == [bytes.fromhex(vector_by_id("v4-aidon-push")["expect"]["apdu_hex"])]


# -- fuzz ------------------------------------------------------------------------------------
@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes_never_raise_and_stay_bounded(data: bytes) -> None:
    joiner = HdlcStreamJoiner(max_apdu_size=1000)
    for event in joiner.feed(data) + joiner.close():
        assert isinstance(event, JoinedApdu | JoinError | OtherFrame)
        if isinstance(event, JoinedApdu):
            assert len(event.apdu) <= 1000
    assert joiner.buffered == 0


@FUZZ
@given(
    apdus=st.lists(st.binary(min_size=1, max_size=700), min_size=1, max_size=4),
    size=st.integers(min_value=8, max_value=256),
    garbage=st.binary(max_size=20).filter(lambda g: 0x7E not in g),
    chunk=st.integers(min_value=1, max_value=300),
    frame_type=st.sampled_from([FrameType.UI, FrameType.I]),
)
def test_segmented_apdus_with_garbage_between_survive_any_chunking(
    apdus: list[bytes], size: int, garbage: bytes, chunk: int, frame_type: FrameType
) -> None:
    frames: list[bytes] = []
    seq = 0
    for apdu in apdus:
        these = _segments(apdu, size, frame_type, first_seq=seq)
        seq += len(these)
        frames.extend(these)
    stream = garbage + garbage.join(frames)  # trailing bytes could be a frame's start
    joiner = HdlcStreamJoiner()
    events = [e for i in range(0, len(stream), chunk) for e in joiner.feed(stream[i : i + chunk])]
    assert _apdus(events) == apdus
    assert joiner.close() == []


@FUZZ
@given(
    apdu=st.binary(min_size=1, max_size=600),
    flip=st.integers(min_value=0),
)
def test_one_flipped_byte_never_yields_a_wrong_apdu(apdu: bytes, flip: int) -> None:
    frames = _segments(apdu, 64)
    stream = bytearray(b"".join(frames))
    index = flip % len(stream)
    stream[index] ^= 0x5A
    joiner = HdlcStreamJoiner()
    events = joiner.feed(bytes(stream)) + joiner.close()
    for got in _apdus(events):
        # A frame the flip broke is reported; it never turns into other bytes.
        assert got == apdu or apdu.endswith(got) or got in apdu
