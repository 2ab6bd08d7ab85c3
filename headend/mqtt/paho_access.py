"""The few things the bridge does on the paho client underneath ``aiomqtt.Client``.

aiomqtt 2.x (2.5.1 here) has no public manual acknowledgement: paho PUBACKs every QoS 1 message
as it arrives, before the head-end has stored the balance event it carries. paho's own
``manual_ack_set(True)`` and ``ack(mid, qos)`` are the documented way round that (DESIGN.md,
dependencies), reachable only as ``client._client``. Two more paho calls serve a connection that
is going away, where aiomqtt's public calls either wait (``publish`` waits for the PUBACK) or
leave the socket open (a connect whose CONNACK never came). One more reads what is waiting
in the socket (aiomqtt reads one packet per event loop turn). Everything else goes through
aiomqtt's public API; this module is the one place that knows aiomqtt's private attribute.
"""

from __future__ import annotations

import aiomqtt
import paho.mqtt.client as paho

__all__ = ["ack", "drop_connection", "enable_manual_ack", "queue_publish", "read_waiting"]


def _paho(client: aiomqtt.Client) -> paho.Client:
    return client._client


def enable_manual_ack(client: aiomqtt.Client) -> None:
    """No automatic PUBACK: call ``ack`` once the message is committed. Before connecting."""
    _paho(client).manual_ack_set(True)


def ack(client: aiomqtt.Client, message: aiomqtt.Message) -> str | None:
    """Send the PUBACK for ``message``; None when it went, else paho's reason."""
    rc = _paho(client).ack(message.mid, message.qos)
    return None if rc == paho.MQTT_ERR_SUCCESS else paho.error_string(rc)


def queue_publish(
    client: aiomqtt.Client, topic: str, payload: str | bytes, qos: int, retain: bool
) -> None:
    """Queue a message without waiting for its PUBACK: a cancelled bridge has no time to wait,
    yet a message queued before the DISCONNECT still leaves first on the same socket."""
    _paho(client).publish(topic, payload, qos, retain)


def drop_connection(client: aiomqtt.Client) -> None:
    """Close what aiomqtt leaves open when connecting or disconnecting did not finish."""
    _paho(client).disconnect()


def read_waiting(client: aiomqtt.Client, limit: int) -> None:
    """Read up to ``limit`` packets already in the socket, as paho's ``loop_read`` does for
    one. aiomqtt reads one packet each time the loop finds the socket readable, so on a loop
    busy with a thousand meter sessions a billing run arrives at one message per turn of the
    loop; this lets the bridge take what the broker has sent as one batch (issue 10). A
    failure is left to aiomqtt's own read, which meets it at once."""
    inner = _paho(client)
    for _ in range(limit):
        if inner._sock is None:
            return
        try:
            rc = inner._packet_read()
        except Exception:  # aiomqtt's reader meets it too and ends the connection
            return
        if rc != paho.MQTT_ERR_SUCCESS:
            if rc != paho.MQTT_ERR_AGAIN:
                inner._loop_rc_handle(rc)
            return
