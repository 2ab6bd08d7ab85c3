"""What the bridge does differently when it speaks MQTT 5, through aiomqtt's public API and
paho's Properties (the type aiomqtt takes and gives for MQTT 5 properties).

MQTT 5 is what lets a requester name a response topic and correlation data on a request; the
session stays what it was under 3.1.1 (``clean_session=False``): clean start off and a
session that never expires, so unacknowledged balance events survive a reconnect."""

from __future__ import annotations

from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

__all__ = ["publish_properties", "reply_address", "session_options"]

SESSION_NEVER_EXPIRES = 0xFFFFFFFF


def session_options(mqtt5: bool) -> dict[str, Any]:
    """``aiomqtt.Client`` keyword arguments for a persistent session in either version."""
    if not mqtt5:
        return {"clean_session": False}
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = SESSION_NEVER_EXPIRES
    return {
        "protocol": aiomqtt.ProtocolVersion.V5,
        "clean_start": False,
        "properties": properties,
    }


def reply_address(message: aiomqtt.Message) -> tuple[str | None, bytes | None]:
    """A request's MQTT 5 response topic and correlation data (None under 3.1.1)."""
    properties = message.properties
    topic = getattr(properties, "ResponseTopic", None)
    correlation = getattr(properties, "CorrelationData", None)
    return (
        topic if isinstance(topic, str) and topic else None,
        bytes(correlation) if isinstance(correlation, bytes | bytearray) else None,
    )


def publish_properties(correlation_data: bytes | None, mqtt5: bool) -> Properties | None:
    """The PUBLISH properties of a reply that carries correlation data back."""
    if correlation_data is None or not mqtt5:
        return None
    properties = Properties(PacketTypes.PUBLISH)
    properties.CorrelationData = correlation_data
    return properties
