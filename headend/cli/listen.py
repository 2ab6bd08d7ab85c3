"""`headend listen`: the push listener alone, in the foreground, printing every push it
decodes; for a field engineer commissioning meters (does the meter call, what does it send).

Nothing is stored or published and no meter is asked anything. The inventory (from the
configured database, when there is one) is used only to name senders and to check ciphered
pushes with their meter's keys: a ciphered push from a meter the inventory does not know, or
whose tag does not verify, is shown as refused, never decoded."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Annotated, Any

import typer

from headend.cli.common import EXIT_CONFIG, ConfigOpt, JsonOpt, fail, load_cli_config
from headend.config import Config
from headend.meters.secrets import MasterKey, SecretsError

__all__ = ["describe_push", "listen"]


def describe_push(accepted: Any) -> dict[str, Any]:
    """What `listen` prints of one push (headend.listener.handler.Accepted)."""
    content = accepted.content
    return {
        "meter_id": accepted.meter_id,
        "type": accepted.notification.to_json()["type"],
        "ciphered": accepted.ciphered,
        "ts": None if content.ts is None else content.ts.isoformat(),
        "values": {obis: _plain(value) for obis, value in content.readings},
        "events": [{"log": log, "code": code} for log, code in content.events],
        "problems": list(content.problems),
    }


def _plain(value: Any) -> Any:
    return value.hex() if isinstance(value, bytes) else value


def _line(push: dict[str, Any]) -> str:
    values = " ".join(f"{k}={v}" for k, v in push["values"].items())
    events = " ".join(f"event {e['code']} ({e['log']})" for e in push["events"])
    lock = "ciphered " if push["ciphered"] else ""
    return f"{push['ts'] or '-'} {push['meter_id']} {lock}{push['type']} {values} {events}".strip()


async def _listen(
    config: Config, host: str, port: int | None, udp_port: int | None, as_json: bool
) -> None:
    from headend.listener.service import ListenerService
    from headend.meters.access import MeterAccess
    from headend.storage import Database, Repository

    db = await Database.open(config.database.url)
    try:
        try:
            key = config.open_master_key(generate=False)
        except SecretsError:  # no inventory secrets to open: plain pushes only
            key = MasterKey.generate()
        access = MeterAccess(db, Repository(db), key)

        def show(accepted: Any) -> None:
            push = describe_push(accepted)
            sys.stdout.write((json.dumps(push) if as_json else _line(push)) + "\n")
            sys.stdout.flush()

        service = ListenerService(
            access,
            None,
            None,
            host=host,
            tcp_port=port,
            udp_port=udp_port,
            on_accepted=show,
            read_object_lists=False,
            show_unknown=True,
        )
        task = asyncio.create_task(service.run())
        await service.listener.ready()
        sys.stderr.write(
            f"listening on {host}: tcp {service.listener.tcp_port}, "
            f"udp {service.listener.udp_port} (Ctrl-C to stop)\n"
        )
        await task
    finally:
        await db.dispose()


def listen(
    ctx: typer.Context,
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port (0: any).")],
    udp_port: Annotated[
        int | None, typer.Option("--udp-port", min=0, max=65535, help="Also UDP, on this port.")
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "0.0.0.0",
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The push listener alone: print each push it decodes until Ctrl-C."""
    cfg = load_cli_config(config, ctx)
    try:
        asyncio.run(_listen(cfg, host, port, udp_port, as_json))
    except SecretsError as exc:
        fail(str(exc), EXIT_CONFIG)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except OSError as exc:
        fail(f"listen: {exc}", 1)
