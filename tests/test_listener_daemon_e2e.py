"""`headend run` with its listener on: a simulated meter's pushes (TCP wrapper ciphered, UDP
wrapper plain, segmented HDLC ciphered) reach the database and the real broker (Mosquitto when
HEADEND_TEST_MQTT_HOST names one) as readings marked "source": "push" and as events on
headend/meters/{id}/events."""

from __future__ import annotations

from typing import Any

import pytest
from e2e_support import eventually
from test_daemon_e2e import headend

from headend.mqtt.broker import free_port
from simulators.config import PushSpec


@pytest.mark.parametrize(
    ("transport", "security"), [("tcp", "hls-gmac"), ("udp", "none"), ("hdlc", "hls-gmac")]
)
async def test_the_daemon_takes_pushes_onto_mqtt_and_into_the_database(
    sim_fleet: Any, tmp_path: Any, transport: str, security: str
) -> None:
    port = free_port()
    push = PushSpec("127.0.0.1", port, interval_s=0.5, transport=transport, hdlc_max_info=48)
    async with sim_fleet(1, security=security, push=push) as fleet:
        key = "UDP" if transport == "udp" else "TCP"
        overrides = {
            f"HEADEND_LISTENER_{key}_PORT": str(port),
            "HEADEND_LISTENER_HOST": "127.0.0.1",
        }
        async with headend(fleet, tmp_path, overrides=overrides) as h:
            pushed = await eventually(
                lambda: [r for r in h.out("readings", 0) if r.get("source") == "push"],
                within=20,
                what="a pushed reading on MQTT",
            )
            assert "1.0.1.8.0.255" in pushed[0]["values"]
            fleet.open_cover(0)
            events = await eventually(lambda: h.out("events", 0), what="the event on MQTT")
            assert events[0]["name"] == "Meter cover removed" and events[0]["source"] == "push"
            assert h.repository is not None
            stored = await h.repository.meter_events(h.ids[0])
            assert [e.code for e in stored] == [44]
