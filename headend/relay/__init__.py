"""Relay control: the prepaid rules and the durable command executor."""
