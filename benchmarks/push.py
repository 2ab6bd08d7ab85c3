"""Push listener throughput: N meters (1,000 by default) push at once, each one ciphered
DataNotification (general-glo-ciphering, its own system title and keys) over its own TCP
connection (or one UDP datagram each), into the listener as `headend run` has it: identified
by system title, GCM tag checked, invocation counter checked and stored, readings stored and
their messages written to the durable outbox in the same transaction (SQLite, one file).

Figures, all from this run:
- received: pushes stored (every one must be: the run fails otherwise);
- pushes_per_s: N over the wall time from "every meter connected" to "all stored";
- cpu_per_push_ms: this process's CPU (listener, storage, outbox) over that span, per push;
- decode_floor_ms: CPU per push of the sans-IO decode alone (framing, unwrap with the GCM
  check, mapping; no sockets, no storage), the floor the full path is beside.
The meters run in another process (benchmarks/_push_sender.py), so their CPU is not counted.

    python -m benchmarks push --json [--meters 1000] [--transport tcp|udp]"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import (
    cpu_per_call,
    emit,
    exit_code,
    machine,
    machine_busy_s,
    others_cpu_percent,
    parser,
    raise_fd_limit,
    ratio,
    rounded,
)

ENERGY = "1.0.1.8.0.255"
POWER = "1.0.1.7.0.255"


def _push(index: int) -> tuple[str, bytes, bytes, bytes, bytes]:
    """(meter id, system title, enc key, auth key, wrapper frame of its ciphered push)."""
    from cosem_objects.apdu.notifications import DataNotification
    from cosem_objects.data import Data
    from cosem_objects.obis import Obis
    from cosem_objects.security import SecurityKeys, wrap_general_glo
    from drivers.wrapper import encode_wrapper

    meter_id = f"PB{index:06d}"
    title = b"PSH" + index.to_bytes(5, "big")
    enc = os.urandom(16)
    auth = os.urandom(16)

    def obis(text: str) -> Data:
        return Data.octet_string(Obis.parse(text).to_bytes())

    body = Data.structure(
        [
            obis("0.0.42.0.0.255"),
            Data.octet_string(meter_id.encode()),
            obis(ENERGY),
            Data.double_long_unsigned(1000 + index),
            obis(POWER),
            Data.double_long_unsigned(index % 5000),
        ]
    )
    plain = DataNotification(1, None, body).to_bytes()
    apdu = wrap_general_glo(plain, 0x30, title, 1, SecurityKeys(enc, auth))
    return meter_id, title, enc, auth, encode_wrapper(1, 0x66, apdu)


async def _inventory(
    db: Any, pushes: list[tuple[str, bytes, bytes, bytes, bytes]], key: Any
) -> None:
    from headend.meters.inventory import InventoryRow, import_rows
    from headend.meters.secrets import Secret

    rows = [
        InventoryRow(
            meter_id=meter_id,
            host="127.0.0.1",  # where the meters call from: no address to update
            port=4059,
            transport="wrapper",
            client_sap=1,
            server_logical=1,
            server_physical=None,
            security="hls-gmac",
            serial_port=None,
            baud=None,
            system_title=title.hex(),
            line=f"tcp:127.0.0.1:{meter_id}",
            auth_key=Secret(auth),
            enc_key=Secret(enc),
        )
        for meter_id, title, enc, auth, _ in pushes
    ]
    await import_rows(db, rows, key)


def decode_floor(pushes: list[tuple[str, bytes, bytes, bytes, bytes]], directory: Any) -> float:
    """CPU per push of framing + unwrap (GCM) + mapping, sans IO."""
    from headend.listener.framing import StreamFraming
    from headend.listener.mapping import map_notification
    from headend.listener.unwrap import Opened, open_apdu

    frames = [p[4] for p in pushes]

    def all_of_them() -> None:
        for frame in frames:
            (event,) = StreamFraming().feed(frame)
            opened = open_apdu(event.apdu, directory)  # type: ignore[union-attr]
            assert isinstance(opened, Opened)
            map_notification(opened.notification, None)

    return cpu_per_call(all_of_them, min_s=0.5, min_calls=3) / len(frames)


async def run(meters: int, transport: str) -> dict[str, Any]:
    from headend.listener.service import ListenerService
    from headend.meters.access import MeterAccess
    from headend.meters.secrets import MasterKey
    from headend.mqtt.durable_outbox import DurableOutbox
    from headend.mqtt.notifier import Notifier
    from headend.mqtt.topics import Topics
    from headend.storage import Database, Repository

    failures: list[str] = []
    pushes = [_push(i) for i in range(meters)]
    with tempfile.TemporaryDirectory() as tmp:
        db = await Database.open(f"sqlite+aiosqlite:///{Path(tmp) / 'push.db'}")
        try:
            key = MasterKey.generate()
            await _inventory(db, pushes, key)
            repository = Repository(db)
            outbox = DurableOutbox(repository.outbox)
            access = MeterAccess(db, repository, key)
            all_in = asyncio.Event()

            def counted(_accepted: object) -> None:
                if service.handler.accepted >= meters:
                    all_in.set()

            service = ListenerService(
                access,
                repository,
                Notifier(outbox, Topics()),
                host="127.0.0.1",
                tcp_port=0 if transport == "tcp" else None,
                udp_port=0 if transport == "udp" else None,
                read_object_lists=False,
                max_connections=meters + 100,
                on_accepted=counted,
            )
            writer = asyncio.create_task(outbox.run())
            task = asyncio.create_task(service.run())
            await service.listener.ready()
            floor = decode_floor(pushes, service.directory)
            frames = Path(tmp) / "frames.bin"
            frames.write_bytes(b"".join(len(p[4]).to_bytes(4, "big") + p[4] for p in pushes))
            port = service.listener.tcp_port or service.listener.udp_port
            sender = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "benchmarks._push_sender",
                str(port),
                str(frames),
                transport,
                stdout=asyncio.subprocess.PIPE,
            )
            assert sender.stdout is not None
            line = await asyncio.wait_for(sender.stdout.readline(), 120)
            if line.strip() != b"connected":
                failures.append(f"sender: {line!r}")
            wall0, cpu0, busy0 = time.perf_counter(), time.process_time(), machine_busy_s()
            handler = service.handler
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_in.wait(), 120)
            wall = time.perf_counter() - wall0
            cpu = time.process_time() - cpu0
            busy = machine_busy_s() - busy0
            sent_line = await asyncio.wait_for(sender.stdout.readline(), 60)
            await sender.wait()
            received = handler.accepted
            if received != meters:
                failures.append(f"received {received} of {meters} pushes")
            refused = dict(handler.guard.counts)
            if refused:
                failures.append(f"refused: {refused}")
            stored = 0
            for meter_id, *_ in pushes[:: max(1, meters // 20)]:
                stored += len(await repository.readings(meter_id, obis=ENERGY))
            service.stop()
            await task
            outbox_rows = (
                await repository.outbox.depth() if hasattr(repository.outbox, "depth") else None
            )
            writer.cancel()
        finally:
            await db.dispose()
    return {
        "benchmark": "push",
        "meters": meters,
        "transport": transport,
        "push": "general-glo-ciphered DataNotification, 2 registers, wrapper",
        "received": received,
        "sampled_meters_with_stored_reading": stored,
        "pushes_per_s": rounded(meters / wall if wall > 0 else None, 1),
        "wall_s": rounded(wall),
        "cpu_per_push_ms": rounded(cpu / max(1, received) * 1000),
        "decode_floor_ms": rounded(floor * 1000),
        "cpu_vs_floor": ratio(cpu / max(1, received), floor),
        "others_cpu_percent": others_cpu_percent(busy, cpu, wall),
        "sender": sent_line.decode().strip(),
        "outbox_rows": outbox_rows,
        "machine": machine(),
        "failures": failures,
    }


def main(argv: list[str]) -> int:
    args_parser = parser("push", __doc__.splitlines()[0] if __doc__ else "push")
    args_parser.add_argument("--meters", type=int, default=1000)
    args_parser.add_argument("--transport", choices=("tcp", "udp"), default="tcp")
    args = args_parser.parse_args(argv)
    limits = raise_fd_limit(2 * args.meters + 200)
    if not limits["enough"]:
        print(f"file descriptor limit too low: {limits}", file=sys.stderr)
        return 1
    result = asyncio.run(run(args.meters, args.transport))
    emit(result, args.json)
    return exit_code(result)
