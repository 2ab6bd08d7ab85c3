"""Client and server HDLC link machines talking to each other, purely sans-IO."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cosem_objects.errors import ProtocolError
from drivers.hdlc.addresses import HdlcAddress
from drivers.hdlc.connection import HdlcClientConnection, HdlcServerConnection
from drivers.hdlc.events import (
    ApduReceived,
    BadFrame,
    Connected,
    Disconnected,
    FrameRejected,
    HdlcEvent,
    LinkFailed,
    ModeRejected,
    ProtocolViolation,
    SendFrame,
)
from drivers.hdlc.frames import LLC_REQUEST, LLC_RESPONSE, FrameType, HdlcFrame, parse_frame
from drivers.hdlc.numbered import LinkState
from drivers.hdlc.parameters import HdlcParameters

CLIENT = HdlcAddress.client(16)
SERVER = HdlcAddress.server(1, 17)

Reply = Callable[[bytes], bytes]


class Wire:
    """Carries frames between a client and a server; records every frame and all events."""

    def __init__(
        self,
        client: HdlcClientConnection,
        server: HdlcServerConnection,
        reply: Reply | None = None,
    ) -> None:
        self.client = client
        self.server = server
        self.reply = reply
        self.log: list[tuple[str, HdlcFrame]] = []  # ("c>s" | "s>c", frame)
        self.client_events: list[HdlcEvent] = []
        self.server_events: list[HdlcEvent] = []
        self.drop: Callable[[str, HdlcFrame], bool] = lambda direction, frame: False

    def run(self, to_server: list[bytes] = (), to_client: list[bytes] = ()) -> None:  # type: ignore[assignment]
        queue: deque[tuple[str, bytes]] = deque()
        queue.extend(("c>s", f) for f in to_server)
        queue.extend(("s>c", f) for f in to_client)
        steps = 0
        while queue:
            steps += 1
            assert steps < 10_000, "link does not settle"
            direction, data = queue.popleft()
            frame = parse_frame(data)
            self.log.append((direction, frame))
            if self.drop(direction, frame):
                continue
            if direction == "c>s":
                events = self.server.receive_data(data)
                self.server_events += events
                for event in events:
                    if isinstance(event, SendFrame):
                        queue.append(("s>c", event.data))
                    elif isinstance(event, ApduReceived) and self.reply is not None:
                        queue.extend(
                            ("s>c", f) for f in self.server.send_apdu(self.reply(event.apdu))
                        )
            else:
                events = self.client.receive_data(data)
                self.client_events += events
                queue.extend(("c>s", e.data) for e in events if isinstance(e, SendFrame))

    def connect(self) -> None:
        self.run([self.client.connect()])

    def request(self, apdu: bytes) -> None:
        self.run(self.client.send_apdu(apdu))

    def apdus(self, side: str) -> list[bytes]:
        events = self.client_events if side == "client" else self.server_events
        return [e.apdu for e in events if isinstance(e, ApduReceived)]

    def frames(self, direction: str) -> list[HdlcFrame]:
        return [f for d, f in self.log if d == direction]


def echo(apdu: bytes) -> bytes:
    return b"\xc4" + apdu


def make_pair(
    *,
    client_info: int = 128,
    server_info: int = 128,
    client_window: int = 1,
    server_window: int = 1,
    reply: Reply | None = echo,
    server_address: HdlcAddress = SERVER,
) -> Wire:
    client = HdlcClientConnection(
        CLIENT,
        server_address,
        max_info_rx=client_info,
        max_info_tx=client_info,
        window=client_window,
    )
    server = HdlcServerConnection(
        SERVER, max_info_rx=server_info, max_info_tx=server_info, window=server_window
    )
    return Wire(client, server, reply)


def connected_pair(**kwargs: object) -> Wire:
    wire = make_pair(**kwargs)  # type: ignore[arg-type]
    wire.connect()
    assert wire.client.connected and wire.server.connected
    return wire


# -- link set-up and tear-down ----------------------------------------------------------------
def test_connect_negotiates_the_smaller_limits() -> None:
    wire = make_pair(client_info=512, server_info=200, client_window=3, server_window=2)
    wire.connect()
    client_params = next(e for e in wire.client_events if isinstance(e, Connected)).params
    server_params = next(e for e in wire.server_events if isinstance(e, Connected)).params
    assert client_params == HdlcParameters(200, 200, 2, 2)
    assert server_params == HdlcParameters(200, 200, 2, 2)
    snrm, ua = wire.log[0][1], wire.log[1][1]
    assert snrm.frame_type is FrameType.SNRM and snrm.dst == SERVER and snrm.src == CLIENT
    assert HdlcParameters.from_bytes(snrm.info) == HdlcParameters(512, 512, 3, 3)
    assert ua.frame_type is FrameType.UA and ua.src == SERVER


def test_all_default_snrm_has_no_information_field() -> None:
    client = HdlcClientConnection(16, HdlcAddress.server(1, 17))
    assert client.connect() == bytes.fromhex("7EA00802232193BD647E")  # vector v1-snrm


def test_client_reads_the_ua_of_a_real_meter() -> None:
    client = HdlcClientConnection(16, HdlcAddress.server(1, 17), max_info_rx=512, max_info_tx=512)
    client.connect()
    ua = bytes.fromhex("7EA01F21022373E6C781801205019A06019A070400000001080400000001CCA27E")
    events = client.receive_data(ua)
    assert events == [Connected(HdlcParameters(154, 154, 1, 1))]


def test_disconnect() -> None:
    wire = connected_pair()
    wire.run([wire.client.disconnect()])
    assert wire.client.state is LinkState.DISCONNECTED
    assert wire.server.state is LinkState.DISCONNECTED
    assert [type(e) for e in wire.client_events][-1] is Disconnected
    assert any(isinstance(e, Disconnected) for e in wire.server_events)
    assert wire.log[-1][1].frame_type is FrameType.UA


def test_disc_when_not_connected_gets_dm_and_still_ends_the_link() -> None:
    wire = make_pair()
    wire.run([wire.client.disconnect()])
    assert wire.log[-1][1].frame_type is FrameType.DM
    assert isinstance(wire.client_events[-1], Disconnected)


def test_dm_to_snrm_is_mode_rejected() -> None:
    client = HdlcClientConnection(CLIENT, SERVER)
    client.connect()
    dm = HdlcFrame.make(FrameType.DM, CLIENT, SERVER).to_bytes()
    assert client.receive_data(dm) == [ModeRejected(b"")]
    assert client.state is LinkState.DISCONNECTED


def test_server_answers_dm_to_frames_out_of_state() -> None:
    server = HdlcServerConnection(SERVER)
    for frame_type in (FrameType.I, FrameType.RR):
        frame = HdlcFrame.make(frame_type, SERVER, CLIENT, info=LLC_REQUEST + b"\x01")
        events = server.receive_data(frame.to_bytes())
        assert len(events) == 1 and isinstance(events[0], SendFrame)
        reply = parse_frame(events[0].data)
        assert reply.frame_type is FrameType.DM
        assert (reply.dst, reply.src) == (CLIENT, SERVER)
    assert not server.connected


def test_server_gone_mid_session_gives_mode_rejected() -> None:
    wire = connected_pair()
    # The server side forgets the link (e.g. its inactivity timer fired).
    wire.server.receive_data(HdlcFrame.make(FrameType.DISC, SERVER, CLIENT).to_bytes())
    wire.request(b"\xc0\x01")
    assert any(isinstance(e, ModeRejected) for e in wire.client_events)
    assert wire.client.state is LinkState.DISCONNECTED
    with pytest.raises(ProtocolError):
        wire.client.send_apdu(b"\xc0")


def test_frmr_from_the_server_is_frame_rejected() -> None:
    wire = connected_pair()
    frmr = HdlcFrame.make(FrameType.FRMR, CLIENT, SERVER, info=b"\x10\x00\x01").to_bytes()
    events = wire.client.receive_data(frmr)
    assert events == [FrameRejected(b"\x10\x00\x01")]
    assert wire.client.state is LinkState.DISCONNECTED


def test_server_sends_frmr_for_an_impossible_nr() -> None:
    wire = connected_pair()
    bad = HdlcFrame.make(
        FrameType.I, SERVER, CLIENT, send_seq=0, recv_seq=3, info=b"\xe6\xe6\x00\x01"
    )
    wire.run([bad.to_bytes()])
    assert any(isinstance(e, ProtocolViolation) for e in wire.server_events)
    assert not wire.apdus("server")
    frmr = wire.log[-1][1]
    assert frmr.frame_type is FrameType.FRMR
    assert frmr.info[0] == bad.control and frmr.info[2] & 0x08
    assert any(isinstance(e, FrameRejected) for e in wire.client_events)


# -- data transfer ------------------------------------------------------------------------------
def test_small_request_and_response() -> None:
    wire = connected_pair()
    wire.request(b"\xc0\x01\xc1\x00\x08")
    assert wire.apdus("server") == [b"\xc0\x01\xc1\x00\x08"]
    assert wire.apdus("client") == [b"\xc4\xc0\x01\xc1\x00\x08"]
    request, response = wire.frames("c>s")[-1], wire.frames("s>c")[-1]
    assert request.info.startswith(LLC_REQUEST) and response.info.startswith(LLC_RESPONSE)
    assert (request.send_seq, request.recv_seq, request.control) == (0, 0, 0x10)
    assert (response.send_seq, response.recv_seq, response.control) == (0, 1, 0x30)


def test_sequence_numbers_wrap_modulo_8() -> None:
    wire = connected_pair()
    for n in range(20):
        wire.request(bytes([0xC0, n]))
    assert wire.apdus("client") == [bytes([0xC4, 0xC0, n]) for n in range(20)]
    assert [f.send_seq for f in wire.frames("c>s")[1:]] == [n % 8 for n in range(20)]


@pytest.mark.parametrize(("client_window", "server_window"), [(1, 1), (3, 3), (7, 7), (1, 4)])
@pytest.mark.parametrize("size", [0, 1, 100, 150, 1000, 5000])
def test_segmentation_both_ways(client_window: int, server_window: int, size: int) -> None:
    wire = connected_pair(
        client_info=32, server_info=32, client_window=client_window, server_window=server_window
    )
    window = min(client_window, server_window)
    apdu = bytes((i * 7) & 0xFF for i in range(size))
    wire.request(apdu)
    assert wire.apdus("server") == [apdu]
    assert wire.apdus("client") == [echo(apdu)]
    for direction, llc in (("c>s", LLC_REQUEST), ("s>c", LLC_RESPONSE)):
        data = [f for f in wire.frames(direction) if f.frame_type is FrameType.I]
        assert all(len(f.info) <= 32 for f in data)
        assert data[0].info.startswith(llc)
        assert all(f.segmented for f in data[:-1]) and not data[-1].segmented
        # The LLC header is only in the first segment.
        joined = b"".join(f.info for f in data)
        assert joined[3:] == (apdu if direction == "c>s" else echo(apdu))
        # No burst of I frames is longer than the window, and P/F closes each burst.
        run = 0
        for _, frame in wire.log:
            if frame.frame_type is FrameType.I:
                run += 1
                assert run <= window
                if frame.poll_final:
                    run = 0
            else:
                run = 0


def test_window_greater_than_one_sends_bursts() -> None:
    wire = connected_pair(client_info=32, server_info=32, client_window=3, server_window=3)
    wire.request(bytes(300))
    # The server answers 304 bytes in 10 segments: bursts of 3, one RR from the client each.
    server_data = [f for f in wire.frames("s>c") if f.frame_type is FrameType.I]
    assert [f.poll_final for f in server_data[:3]] == [False, False, True]
    client_rrs = [f for f in wire.frames("c>s") if f.frame_type is FrameType.RR]
    assert len(client_rrs) == 3  # after bursts 1-3; the 4th burst ends the message


def test_oversized_apdu_is_dropped_and_the_link_goes_on() -> None:
    client = HdlcClientConnection(CLIENT, SERVER, max_apdu_size=100)
    server = HdlcServerConnection(SERVER, max_info_tx=32, max_info_rx=32)
    sizes = iter([300, 50])
    wire = Wire(client, server, lambda apdu: bytes(next(sizes)))
    wire.connect()
    wire.request(b"\xc0\x01")
    assert any(isinstance(e, ProtocolViolation) for e in wire.client_events)
    assert wire.apdus("client") == []
    wire.request(b"\xc0\x02")
    assert wire.apdus("client") == [bytes(50)]


def test_apdu_is_kept_when_the_llc_header_is_missing() -> None:
    wire = connected_pair()
    reply = HdlcFrame.make(FrameType.I, CLIENT, SERVER, send_seq=0, recv_seq=1, info=b"\xc4\x01")
    wire.client.send_apdu(b"\xc0")
    assert wire.client.receive_data(reply.to_bytes()) == [ApduReceived(b"\xc4\x01")]


# -- sequence errors and retransmission ------------------------------------------------------------
def test_wrong_ns_is_a_protocol_violation_not_data() -> None:
    wire = connected_pair()
    wire.client.send_apdu(b"\xc0\x01")
    wrong = HdlcFrame.make(
        FrameType.I, CLIENT, SERVER, send_seq=5, recv_seq=1, info=LLC_RESPONSE + b"\xc4"
    )
    events = wire.client.receive_data(wrong.to_bytes())
    assert any(isinstance(e, ProtocolViolation) and "N(S)" in e.reason for e in events)
    assert not any(isinstance(e, ApduReceived) for e in events)
    # The client asks the server to go back to N(R) = 0.
    rr = parse_frame(next(e for e in events if isinstance(e, SendFrame)).data)
    assert rr.frame_type is FrameType.RR and rr.recv_seq == 0


def test_wrong_nr_from_the_server_is_a_protocol_violation() -> None:
    wire = connected_pair()
    wire.client.send_apdu(b"\xc0\x01")
    wrong = HdlcFrame.make(
        FrameType.I, CLIENT, SERVER, send_seq=0, recv_seq=4, info=LLC_RESPONSE + b"\xc4"
    )
    events = wire.client.receive_data(wrong.to_bytes())
    assert [type(e) for e in events] == [ProtocolViolation]
    assert "N(R)" in events[0].reason  # type: ignore[union-attr]


def test_lost_request_is_resent_on_timeout() -> None:
    wire = connected_pair()
    lost = wire.client.send_apdu(b"\xc0\x01")  # never delivered
    resent = wire.client.on_timeout()
    assert resent == lost
    wire.run(resent)
    assert wire.apdus("server") == [b"\xc0\x01"]
    assert wire.apdus("client") == [b"\xc4\xc0\x01"]


def test_lost_response_is_recovered_without_duplicating_the_request() -> None:
    wire = connected_pair()
    dropped: list[HdlcFrame] = []

    def drop_first_response(direction: str, frame: HdlcFrame) -> bool:
        if direction == "s>c" and frame.frame_type is FrameType.I and not dropped:
            dropped.append(frame)
            return True
        return False

    wire.drop = drop_first_response
    wire.request(b"\xc0\x07")
    assert wire.apdus("client") == []
    wire.run(wire.client.on_timeout())  # resend the request: the server sees a duplicate
    assert wire.apdus("server") == [b"\xc0\x07"]  # delivered once
    assert wire.apdus("client") == [b"\xc4\xc0\x07"]
    wire.request(b"\xc0\x08")  # and the sequence numbers still agree
    assert wire.apdus("client")[-1] == b"\xc4\xc0\x08"


def test_lost_rr_during_segmented_response_is_repaired_by_a_poll() -> None:
    wire = connected_pair(client_info=32, server_info=32)
    dropped: list[HdlcFrame] = []

    def drop_second_rr(direction: str, frame: HdlcFrame) -> bool:
        if direction == "c>s" and frame.frame_type is FrameType.RR:
            dropped.append(frame)
            return len(dropped) == 2
        return False

    wire.drop = drop_second_rr
    wire.request(bytes(200))
    assert wire.apdus("client") == []
    poll = wire.client.on_timeout()
    assert [parse_frame(f).frame_type for f in poll] == [FrameType.RR]
    wire.run(poll)
    assert wire.apdus("client") == [echo(bytes(200))]


def test_lost_segment_response_frame_is_resent_after_the_poll() -> None:
    wire = connected_pair(client_info=32, server_info=32)
    count = [0]

    def drop_third_server_segment(direction: str, frame: HdlcFrame) -> bool:
        if direction == "s>c" and frame.frame_type is FrameType.I:
            count[0] += 1
            return count[0] == 3
        return False

    wire.drop = drop_third_server_segment
    wire.request(bytes(150))
    wire.run(wire.client.on_timeout())
    assert wire.apdus("client") == [echo(bytes(150))]


def test_retries_are_bounded() -> None:
    client = HdlcClientConnection(CLIENT, SERVER, max_retries=2)
    first = client.connect()
    assert client.on_timeout() == [first]
    assert client.on_timeout() == [first]
    with pytest.raises(LinkFailed):
        client.on_timeout()


def test_a_valid_answer_resets_the_retry_count() -> None:
    wire = make_pair()
    wire.client.max_retries = 1
    wire.client.connect()
    wire.run(wire.client.on_timeout())  # one retry, then the UA arrives
    assert wire.client.connected
    wire.client.send_apdu(b"\xc0")
    assert wire.client.on_timeout()  # a fresh budget
    with pytest.raises(LinkFailed):
        wire.client.on_timeout()


def test_timeout_while_disconnecting_resends_disc() -> None:
    wire = connected_pair()
    disc = wire.client.disconnect()
    assert wire.client.on_timeout() == [disc]


# -- addressing ------------------------------------------------------------------------------------
def test_multi_drop_servers_answer_only_their_own_address() -> None:
    meters = {
        17: HdlcServerConnection(HdlcAddress.server(1, 17)),
        18: HdlcServerConnection(HdlcAddress.server(1, 18)),
    }
    client = HdlcClientConnection(CLIENT, HdlcAddress.server(1, 18))
    line = [client.connect()]
    answers: list[bytes] = []
    for data in line:
        for physical, server in meters.items():
            events = server.receive_data(data)
            if physical == 17:
                assert events == []
            answers += [e.data for e in events if isinstance(e, SendFrame)]
    assert meters[18].connected and not meters[17].connected
    assert meters[17].ignored_frames == 1
    assert [type(e) for e in client.receive_data(answers[0])] == [Connected]


def test_server_answers_in_the_address_size_the_client_used() -> None:
    wire = make_pair(server_address=HdlcAddress.server(1, 17, 4))
    wire.connect()
    wire.request(b"\xc0")
    assert all(f.src.size == 4 for f in wire.frames("s>c"))
    assert wire.apdus("client") == [b"\xc4\xc0"]


def test_client_ignores_its_own_echo_and_frames_for_others() -> None:
    wire = connected_pair()
    sent = wire.client.send_apdu(b"\xc0\x01")
    assert wire.client.receive_data(sent[0]) == []  # optical-head echo
    other = HdlcFrame.make(FrameType.I, HdlcAddress.client(1), SERVER, info=b"\x01")
    assert wire.client.receive_data(other.to_bytes()) == []
    assert wire.client.ignored_frames == 2


def test_bad_frames_are_reported() -> None:
    wire = connected_pair()
    frame = bytearray(HdlcFrame.make(FrameType.RR, CLIENT, SERVER).to_bytes())
    frame[-2] ^= 0x55
    events = wire.client.receive_data(bytes(frame))
    assert len(events) == 1 and isinstance(events[0], BadFrame)


# -- fuzz ------------------------------------------------------------------------------------------
FUZZ = settings(max_examples=200, deadline=None)
frame_kinds = st.sampled_from(list(FrameType))
random_frames = st.builds(
    lambda kind, pf, ns, nr, seg, info, to_server: HdlcFrame.make(
        kind,
        SERVER if to_server else CLIENT,
        CLIENT if to_server else SERVER,
        poll_final=pf,
        send_seq=ns,
        recv_seq=nr,
        segmented=seg,
        info=info,
    ).to_bytes(),
    frame_kinds,
    st.booleans(),
    st.integers(0, 7),
    st.integers(0, 7),
    st.booleans(),
    st.one_of(st.binary(max_size=40), st.just(LLC_REQUEST + b"\xc0\x01")),
    st.booleans(),
)


def _expect_only_events(events: list[HdlcEvent]) -> None:
    for event in events:
        assert (
            isinstance(
                event,
                Connected
                | ApduReceived
                | Disconnected
                | ModeRejected
                | FrameRejected
                | ProtocolViolation
                | SendFrame
                | BadFrame,
            )
            or type(event).__name__ == "UiReceived"
        )
        if isinstance(event, SendFrame):
            parse_frame(event.data)  # whatever we send is a well-formed frame


@given(st.lists(st.one_of(random_frames, st.binary(max_size=60)), max_size=25))
@FUZZ
def test_connections_take_any_input(inputs: list[bytes]) -> None:
    wire = connected_pair(client_info=32, server_info=32, client_window=2, server_window=2)
    wire.client.send_apdu(bytes(100))
    for data in inputs:
        for conn in (wire.client, wire.server):
            _expect_only_events(conn.receive_data(data))
            if conn is wire.server and conn.connected:
                try:
                    _expect_only_events([SendFrame(f) for f in conn.send_apdu(b"\xc4")])
                except ProtocolError:
                    pass
        try:
            for data_out in wire.client.on_timeout():
                parse_frame(data_out)
        except LinkFailed:
            pass
