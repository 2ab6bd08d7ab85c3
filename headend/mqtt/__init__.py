"""The MQTT side of the head-end: the contract's topics and payloads, the bridge to the broker,
and an embedded broker for single-box use."""

from headend.mqtt.bridge import BalanceHandler, BridgeStats, MqttBridge
from headend.mqtt.broker import EmbeddedBroker, embedded_broker
from headend.mqtt.payloads import BadEvent, BalanceEvent, parse_balance_event
from headend.mqtt.settings import MqttSettings, MqttSettingsLike, MqttTls
from headend.mqtt.topics import Topics

__all__ = [
    "BadEvent",
    "BalanceEvent",
    "BalanceHandler",
    "BridgeStats",
    "EmbeddedBroker",
    "MqttBridge",
    "MqttSettings",
    "MqttSettingsLike",
    "MqttTls",
    "Topics",
    "embedded_broker",
    "parse_balance_event",
]
