"""The `headend` command: this module only assembles the sub-commands, each of which lives in
its own module of this package (meters.py, run.py, device.py)."""

from __future__ import annotations

from pathlib import Path

import typer

from headend.cli import device as cli_device
from headend.cli import fieldtools as cli_fieldtools
from headend.cli.common import ConfigOpt, DebugOpt, configure_cli_logging
from headend.cli.listen import listen
from headend.cli.meters import meters_app
from headend.cli.run import demo, run, status

__all__ = ["app", "main"]

app = typer.Typer(
    name="headend",
    help="DLMS/COSEM head-end for prepaid electricity meters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(ctx: typer.Context, config: ConfigOpt = None, debug: DebugOpt = False) -> None:
    """DLMS/COSEM head-end: collection daemon, meter inventory, field tools."""
    configure_cli_logging("DEBUG" if debug else "WARNING")
    ctx.obj = {"config": Path(config) if config is not None else None}


app.add_typer(meters_app, name="meters")
app.command("run")(run)
app.command("status")(status)
app.command("demo")(demo)
app.command("listen")(listen)
cli_device.register(app)
cli_fieldtools.register(app)


def main() -> None:
    app()
