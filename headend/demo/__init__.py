"""`headend demo`: the whole system on one box, driven by a scripted billing feed.

A simulator fleet (`python -m simulators`, a subprocess: headend never imports simulators),
the embedded MQTT broker, SQLite in a work directory, the head-end daemon in this process, and
a billing feed that drives some balances low, below zero and back, with a duplicate, an
out-of-order event, a zero balance and malformed payloads thrown in. A watcher subscribes to
everything the head-end publishes and shows it live (rich), or as plain lines with
`--duration S`, ending with a check of every meter's relay at the simulator itself.

One module per part: `run` (the assembly and its order of start and stop), `simulator` (the
fleet subprocess and its control port), `billing` (the script and the feed that plays it),
`view` (the watcher and its live or plain rendering), `verdict` (the relays against the
script)."""

from __future__ import annotations

from headend.demo.billing import DemoScript
from headend.demo.run import run_demo

__all__ = ["DemoScript", "run_demo"]
