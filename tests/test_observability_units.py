"""The parts of the operations surface that need no daemon: the HTTP endpoint under bad or
hostile requests, readiness reasons, the protocol trail's names, the redaction rules."""

from __future__ import annotations

import asyncio
import logging

import pytest
from ops_support import Scrape, fetch

from drivers import trail
from drivers.hdlc.addresses import HdlcAddress
from drivers.hdlc.frames import FrameType, HdlcFrame
from headend.observability import metrics
from headend.observability.http import MAX_HEAD, OpsServer
from headend.observability.redaction import MASK, redact, redact_text


async def _raw(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()


async def test_the_endpoint_answers_and_refuses_what_it_should() -> None:
    reasons: list[str] = []
    refreshed = 0

    async def readiness() -> list[str]:
        return list(reasons)

    async def refresh() -> None:
        nonlocal refreshed
        refreshed += 1

    async with OpsServer("127.0.0.1", 0, readiness=readiness, refresh=refresh) as server:
        assert await fetch(f"{server.url}/readyz") == (200, "ready\n")
        reasons[:] = ["broker not connected", "scheduler not running"]
        status, body = await fetch(f"{server.url}/readyz?verbose=1")
        assert status == 503
        assert body == "not ready: broker not connected\nscheduler not running\n"
        status, body = await fetch(f"{server.url}/metrics")
        assert status == 200 and refreshed == 1
        assert "headend_polls_total" in Scrape(body).exported_names()
        assert (await _raw(server.port, b"POST /metrics HTTP/1.1\r\n\r\n")).startswith(
            b"HTTP/1.1 405"
        )
        assert (await _raw(server.port, b"nonsense\r\n\r\n")).startswith(b"HTTP/1.1 400")
        # A head larger than the limit, or one that never ends, gets no answer and costs
        # nothing more than its connection.
        assert await _raw(server.port, b"GET /" + b"x" * (MAX_HEAD * 2)) == b""
        assert await fetch(f"{server.url}/healthz") == (200, "ok\n")  # still serving


async def test_a_scrape_survives_a_database_that_does_not_answer() -> None:
    async def readiness() -> list[str]:
        return []

    async def broken() -> None:
        raise OSError("database gone")

    async with OpsServer("127.0.0.1", 0, readiness=readiness, refresh=broken) as server:
        status, body = await fetch(f"{server.url}/metrics")
        assert status == 200 and "headend_polls_total" in body


async def test_session_timer_counts_in_flight_and_observes_even_on_failure() -> None:
    before = metrics.SESSION_SECONDS.labels(transport="t", security="s")._sum.get()
    in_flight = metrics.SESSIONS_IN_FLIGHT.labels(purpose="poll")
    start = in_flight._value.get()
    with pytest.raises(OSError):
        async with metrics.session_timer("t", "s", "poll"):
            assert in_flight._value.get() == start + 1
            await asyncio.sleep(0.01)
            raise OSError("line dropped")
    assert in_flight._value.get() == start
    assert metrics.SESSION_SECONDS.labels(transport="t", security="s")._sum.get() > before


def test_failure_reasons() -> None:
    from drivers.errors import LinkTimeout

    assert metrics.failure_reason(TimeoutError()) == "timeout"
    assert metrics.failure_reason(ConnectionRefusedError()) == "connection"
    assert metrics.failure_reason(ValueError()) == "error"
    assert metrics.failure_reason(LinkTimeout("x")) in {"timeout", "connection", "protocol"}


def test_the_trail_names_apdus_and_frames() -> None:
    assert trail.apdu_kind(bytes.fromhex("C001C100080000010000FF0200")) == "get-request-normal"
    assert trail.apdu_kind(bytes.fromhex("C403C2")) == "get-response-with-list"
    assert trail.apdu_kind(bytes.fromhex("6036A1")) == "aarq"
    assert trail.apdu_kind(b"\xcc\x10") == "glo-get-response"
    assert trail.apdu_kind(b"\x99") == "tag-99" and trail.apdu_kind(b"") == "empty"
    client, server = HdlcAddress.client(16), HdlcAddress.server(1)
    frame = HdlcFrame.make(FrameType.I, server, client, send_seq=1, recv_seq=2, info=b"\xe6")
    assert trail.hdlc_frame_kind(frame.to_bytes()) == "I ns=1 nr=2 pf"
    rr = HdlcFrame.make(FrameType.RR, server, client, recv_seq=3, poll_final=False)
    assert trail.hdlc_frame_kind(rr.to_bytes()) == "RR nr=3"
    assert trail.hdlc_frame_kind(b"\x7e\x00\x7e") == "?"


def test_redaction_rules() -> None:
    key = "00112233445566778899AABBCCDDEEFF"
    assert redact_text(f"key {key} end") == f"key {MASK} end"
    assert redact_text("a uuid 9fa010f3-8774-47f0-9757-555ef0f3d609 stays") == (
        "a uuid 9fa010f3-8774-47f0-9757-555ef0f3d609 stays"
    )
    assert redact_text("mqtts://user:p4ss@broker:8883") == "mqtts://user:***@broker:8883"
    event = {
        "event": "x",
        "password": "p",
        "enc_key": "k",
        "key_id": "default",
        "meter_id": key,  # an identifier, bound on purpose: left alone
        "nested": {"auth_key": "k", "list": [b"\x00\x01", f"{key}"]},
    }
    out = redact(None, "info", event)
    assert out["password"] == MASK and out["enc_key"] == MASK and out["key_id"] == "default"
    assert out["meter_id"] == key
    assert out["nested"] == {"auth_key": MASK, "list": ["<2 bytes>", MASK]}


def test_the_sniffer_names_received_frames_only_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    client, server = HdlcAddress.client(16), HdlcAddress.server(1)
    ua = HdlcFrame.make(FrameType.UA, client, server).to_bytes()
    rr = HdlcFrame.make(FrameType.RR, client, server, recv_seq=1).to_bytes()
    sniffer = trail.FrameSniffer("meter 1")
    caplog.set_level(logging.INFO, logger="drivers.trail")
    sniffer.feed(ua)
    assert caplog.records == []  # no DEBUG, no work
    caplog.set_level(logging.DEBUG, logger="drivers.trail")
    sniffer.feed(rr[:4])  # a frame split across reads
    sniffer.feed(rr[4:] + ua)
    kinds = [getattr(r, "hdlc", None) for r in caplog.records]
    assert kinds == ["RR nr=1 pf", "UA pf"]
    assert all(r.peer == "meter 1" for r in caplog.records)  # type: ignore[attr-defined]
