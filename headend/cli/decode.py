"""`headend decode`: a captured byte stream to every APDU and value in it (field tools).

The logic is headend/fieldtools/decode.py (pure); this module reads the input, prints tables or
JSON, and exits 0 when at least one APDU decoded, 5 when none did, with exactly one line on
stderr saying why. That line is written directly, not through rich, so it never wraps."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cosem_objects.errors import DecodeError
from headend.fieldtools.decode import DecodedApdu, DecodeKeys, DecodeReport, decode_input
from headend.fieldtools.hexinput import MAX_INPUT_BYTES, parse_hex_texts

__all__ = ["EXIT_NOTHING_DECODED", "decode", "one_line_error"]

EXIT_NOTHING_DECODED = 5
EXIT_USAGE = 2

HexArgs = Annotated[
    list[str] | None,
    typer.Argument(
        help="Hex bytes (spaces, colons, 0x prefixes and line breaks allowed).", show_default=False
    ),
]
FileOpt = Annotated[
    Path | None, typer.Option("--file", "-f", help="Read the hex from a file ('-': stdin).")
]
KeyOpt = Annotated[str | None, typer.Option(help="16-byte key as hex.", show_default=False)]
TitleOpt = Annotated[
    str | None,
    typer.Option(
        help="Sender system title (8 bytes hex) for glo- APDUs when no AARQ/AARE precedes them.",
        show_default=False,
    ),
]
SecretsOpt = Annotated[
    bool, typer.Option("--show-secrets", help="Show LLS passwords and dedicated keys.")
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def one_line_error(message: str, code: int) -> typer.Exit:
    """Exactly one line on stderr (no wrapping, no markup), then the exit code."""
    text = " ".join(str(message).split())
    sys.stderr.write(f"error: {text}\n")
    sys.stderr.flush()
    return typer.Exit(code)


def _key(value: str | None, name: str, size: int) -> bytes | None:
    if value is None:
        return None
    try:
        raw = parse_hex_texts([value]).data
    except DecodeError as exc:
        raise one_line_error(f"{name}: {exc}", EXIT_USAGE) from None
    if len(raw) != size:
        raise one_line_error(f"{name} must be {size} bytes, got {len(raw)}", EXIT_USAGE)
    return raw


def _read_texts(hex_args: list[str] | None, file: Path | None) -> list[str]:
    texts = list(hex_args or [])
    if file is not None:
        try:
            if str(file) == "-":
                texts.append(sys.stdin.read(MAX_INPUT_BYTES * 4))
            else:
                with file.open(encoding="utf-8", errors="replace") as handle:
                    texts.append(handle.read(MAX_INPUT_BYTES * 4))
        except OSError as exc:
            raise one_line_error(f"{file}: {exc.strerror or exc}", EXIT_NOTHING_DECODED) from None
    elif not texts and not sys.stdin.isatty():
        texts.append(sys.stdin.read(MAX_INPUT_BYTES * 4))
    return texts


def decode(
    hex_bytes: HexArgs = None,
    file: FileOpt = None,
    enc_key: KeyOpt = None,
    auth_key: KeyOpt = None,
    system_title: TitleOpt = None,
    show_secrets: SecretsOpt = False,
    as_json: JsonFlag = False,
) -> None:
    """Decode a captured byte stream: HDLC frames, wrapper frames or a bare APDU."""
    keys = DecodeKeys(
        enc_key=_key(enc_key, "--enc-key", 16),
        auth_key=_key(auth_key, "--auth-key", 16),
        system_title=_key(system_title, "--system-title", 8),
        show_secrets=show_secrets,
    )
    texts = _read_texts(hex_bytes, file)
    try:
        source = parse_hex_texts(texts)
    except DecodeError as exc:
        raise one_line_error(f"input: {exc}", EXIT_NOTHING_DECODED) from None
    report = decode_input(source, keys)
    if as_json:
        sys.stdout.write(json.dumps(report.to_json(), indent=2, default=str) + "\n")
    else:
        _print_report(report)
    if not report.ok:
        raise one_line_error(report.reason(), EXIT_NOTHING_DECODED)


# -- tables ------------------------------------------------------------------------------------
def _print_report(report: DecodeReport) -> None:
    console = Console(highlight=False)
    console.print(f"[bold]layer:[/bold] {report.layer}")
    if report.layer == "hdlc" and report.frames:
        console.print(_hdlc_table(report.frames))
    elif report.layer == "wrapper" and report.frames:
        table = Table(title="wrapper frames")
        for column in ("#", "version", "src wPort", "dst wPort", "length"):
            table.add_column(column)
        for number, frame in enumerate(report.frames, start=1):
            table.add_row(
                str(number),
                *(str(frame[k]) for k in ("version", "src_wport", "dst_wport", "length")),
            )
        console.print(table)
    if report.blocks:
        table = Table(title="general-block-transfer blocks")
        for column in ("block", "last", "streaming", "window", "ack", "data bytes", "from"):
            table.add_column(column)
        for block in report.blocks:
            table.add_row(
                str(block["block_number"]),
                str(block["last_block"]),
                str(block["streaming"]),
                str(block["window"]),
                str(block["block_number_ack"]),
                str(block["block_data_length"]),
                str(block["source"]),
            )
        console.print(table)
    for number, apdu in enumerate(report.apdus, start=1):
        _print_apdu(console, number, apdu)
    for problem in report.errors:
        console.print(f"[red]problem:[/red] {problem}", markup=True)


def _hdlc_table(frames: list[dict[str, Any]]) -> Table:
    table = Table(title="HDLC frames")
    for column in ("#", "type", "src", "dst", "control", "N(S)", "N(R)", "P/F", "seg", "info"):
        table.add_column(column)

    def address(a: dict[str, Any]) -> str:
        return str(a["upper"]) if a["lower"] is None else f"{a['upper']}/{a['lower']}"

    for number, frame in enumerate(frames, start=1):
        info = frame["info"]
        params = frame.get("hdlc_parameters")
        shown = f"{len(info) // 2} bytes" if info else "-"
        if params:
            shown = (
                f"max info tx {params['max_info_tx']} rx {params['max_info_rx']}, "
                f"window tx {params['window_tx']} rx {params['window_rx']}"
            )
        table.add_row(
            str(number),
            frame["frame_type"],
            address(frame["src"]),
            address(frame["dst"]),
            f"0x{frame['control']:02X}",
            str(frame.get("send_seq", "-")),
            str(frame.get("recv_seq", "-")),
            "1" if frame["poll_final"] else "0",
            "S" if frame["segmented"] else "",
            shown,
        )
    return table


def _print_apdu(console: Console, number: int, apdu: DecodedApdu) -> None:
    path = " > ".join([*apdu.layers, apdu.type_name])
    console.print(f"\n[bold]APDU {number}[/bold]: {path}  [dim]({apdu.source})[/dim]", markup=True)
    summary = Table(show_header=False, box=None)
    summary.add_column("field", style="cyan")
    summary.add_column("value")
    for key, value in apdu.json.items():
        if key in ("type", "data", "body", "block_data") or isinstance(value, dict | list):
            continue
        summary.add_row(key, str(value))
    if apdu.datetime is not None:
        summary.add_row("date-time", apdu.datetime)
    if apdu.security is not None:
        sec = apdu.security
        for key in ("system_title", "security_control", "invocation_counter", "tag_ok"):
            summary.add_row(f"security.{key}", str(sec.get(key)))
    console.print(summary)
    for warning in apdu.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}", markup=True)
    data_rows = apdu.rows()
    if data_rows:
        table = Table(title="data")
        for column in ("path", "type", "value"):
            table.add_column(column)
        for row in data_rows:
            table.add_row(*row)
        console.print(table)
    values = apdu.values
    if values:
        table = Table(title="meter values")
        for column in ("OBIS", "type", "raw", "scaler", "unit", "value"):
            table.add_column(column)
        for value in values:
            table.add_row(
                value["obis"],
                value["type"],
                str(value["raw"]),
                "" if value["scaler"] is None else str(value["scaler"]),
                value["unit_name"] or ("" if value["unit"] is None else str(value["unit"])),
                str(value["value"]),
            )
        console.print(table)
