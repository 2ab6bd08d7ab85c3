"""The `headend` command: this module only assembles the sub-commands, each of which lives in
its own module (cli_meters.py, ...)."""

from __future__ import annotations

from pathlib import Path

import typer

from headend import cli_device
from headend.cli_common import ConfigOpt, configure_cli_logging
from headend.cli_meters import meters_app
from headend.cli_run import demo, run, status

__all__ = ["app", "main"]

app = typer.Typer(
    name="headend",
    help="DLMS/COSEM head-end for prepaid electricity meters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(ctx: typer.Context, config: ConfigOpt = None) -> None:
    """DLMS/COSEM head-end: collection daemon, meter inventory, field tools."""
    configure_cli_logging()
    ctx.obj = {"config": Path(config) if config is not None else None}


# -- sub-commands ---------------------------------------------------------------------------
# Each feature registers here, from its own module, e.g.
#   from headend.cli_run import run;        app.command("run")(run)          # daemon
#   from headend.cli_device import read, relay
#   app.command("read")(read);  app.command("relay")(relay)                  # one meter
#   from headend.cli_status import status;  app.command("status")(status)
#   from headend.cli_demo import demo;      app.command("demo")(demo)
app.add_typer(meters_app, name="meters")
app.command("run")(run)
app.command("status")(status)
app.command("demo")(demo)
cli_device.register(app)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
