"""The MQTT side of the head-end: the contract's topics and payloads, the notifier that builds
every outgoing message, the outbox it leaves them in, the bridge to the broker, and an embedded
broker for single-box use."""

from headend.mqtt.bridge import BalanceHandler, BridgeStats, MqttBridge
from headend.mqtt.broker import EmbeddedBroker, embedded_broker
from headend.mqtt.incoming import BadEvent, BalanceEvent, DeadLetter, parse_balance_event
from headend.mqtt.notifier import Notifier
from headend.mqtt.outbox import MemoryOutbox, Outbox, OutboxMessage
from headend.mqtt.topics import Topics

__all__ = [
    "BadEvent",
    "BalanceEvent",
    "BalanceHandler",
    "BridgeStats",
    "DeadLetter",
    "EmbeddedBroker",
    "MemoryOutbox",
    "MqttBridge",
    "Notifier",
    "Outbox",
    "OutboxMessage",
    "Topics",
    "embedded_broker",
    "parse_balance_event",
]
