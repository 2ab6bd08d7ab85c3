"""`headend decode` on every vector in ../shared/vectors that is a frame or an APDU, through the
real command (typer, --json), checking every expected value the vector's JSON holds; then bad
input, wrong keys, the separators engineers paste, joined GET blocks and HDLC segments, and a
fuzz of the pipeline (only clean errors)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from typing import Any

import pytest
from axdr_strategies import data_values, date_times
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner
from vectors import vector_by_id, vector_params

from cosem_objects.apdu import GetResponseWithBlock
from cosem_objects.axdr import encode_data
from cosem_objects.data import Data
from cosem_objects.errors import DecodeError
from drivers.hdlc import FrameType, HdlcAddress, HdlcFrame
from drivers.wrapper import encode_wrapper
from headend.cli.app import app
from headend.fieldtools.decode import DecodeKeys, decode_input
from headend.fieldtools.hexinput import HexInput, parse_hex_texts
from headend.fieldtools.values import meter_values, octet_views, rows, typed

LAYERS = ("hdlc", "wrapper", "apdu", "ciphered-apdu")
SERVICE_SPECIFIC_GLO = {"C8", "C9", "CB", "CC", "CD", "CF", "21", "28"}
RUNNER = CliRunner(mix_stderr=False)


def _hexes(vector: dict[str, Any]) -> list[str]:
    return vector["hex"] if isinstance(vector["hex"], list) else [vector["hex"]]


def _args(vector: dict[str, Any]) -> list[str]:
    args = ["decode", *_hexes(vector), "--json", "--show-secrets"]
    keys = vector["keys"]
    if keys.get("encryption_key"):
        args += ["--enc-key", keys["encryption_key"]]
    if keys.get("authentication_key"):
        args += ["--auth-key", keys["authentication_key"]]
    if keys.get("system_title") and _hexes(vector)[0][:2] in SERVICE_SPECIFIC_GLO:
        args += ["--system-title", keys["system_title"]]
    return args


def _run(args: list[str]) -> tuple[int, dict[str, Any], str]:
    result = RUNNER.invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, json.loads(result.stdout), result.stderr


def _subset(got: dict[str, Any], want: dict[str, Any], where: str) -> None:
    for key, value in want.items():
        assert key in got, f"{where}: {key} missing"
        if isinstance(value, dict) and isinstance(got[key], dict):
            _subset(got[key], value, f"{where}.{key}")
            continue
        assert got[key] == value, f"{where}.{key}: {got[key]!r} != {value!r}"


def _strings(tree: Any) -> list[str]:
    if isinstance(tree, dict):
        return [s for v in tree.values() for s in _strings(v)]
    if isinstance(tree, list):
        return [s for v in tree for s in _strings(v)]
    return [tree] if isinstance(tree, str) else []


def _offset(deviation: int) -> str:
    minutes = -deviation
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _check_value(got: dict[str, Any], want: dict[str, Any]) -> None:
    for key in ("obis", "type", "raw", "scaler", "unit", "class_id", "attribute"):
        if key in want:
            assert got[key] == want[key], (key, got, want)
    if isinstance(want["value"], int | float) and not isinstance(want["value"], bool):
        assert math.isclose(got["value"], want["value"], rel_tol=1e-9, abs_tol=1e-12)
    elif want["obis"] == "0.0.1.0.0.255":  # a date-time: local part as encoded, then offset
        assert got["value"][:19] == want["value"]
    else:
        assert got["value"] == want["value"]


@pytest.mark.parametrize("vector", vector_params(predicate=lambda v: v["layer"] in LAYERS))
def test_vector(vector: dict[str, Any]) -> None:
    expect = vector["expect"]
    code, out, stderr = _run(_args(vector))
    decodes = "apdu" in expect
    assert code == (0 if decodes else 5), (code, stderr)
    if not decodes:
        assert len(stderr.splitlines()) == 1 and stderr.startswith("error: ")
    frames, blocks = out["frames"], out["blocks"]
    if "hdlc" in expect:
        assert out["layer"] == "hdlc"
        _subset(frames[0], expect["hdlc"], "hdlc")
    if "hdlc_parameters" in expect:
        assert frames[0]["hdlc_parameters"] == expect["hdlc_parameters"]
    if "wrapper" in expect:
        assert out["layer"] == "wrapper"
        assert frames[0] == expect["wrapper"]
    gbts = [f["gbt"] for f in expect.get("frames", [])] or (
        [expect["gbt"]] if "gbt" in expect else []
    )
    for index, frame in enumerate(expect.get("frames", [])):
        _subset(frames[index], frame["hdlc"], f"frame {index}")
    assert len(blocks) == len(gbts)
    for index, gbt in enumerate(gbts):
        _subset(blocks[index], {k: v for k, v in gbt.items() if k != "llc"}, f"block {index}")
        assert frames[index]["llc"] == gbt["llc"]
    if not decodes:
        assert out["apdus"] == [] and out["ok"] is False
        return
    assert len(out["apdus"]) == 1, out["errors"]
    apdu = out["apdus"][0]
    assert apdu["apdu_tag"] == expect["apdu_tag"]
    _subset(apdu["apdu"], expect["apdu"], "apdu")
    for key in ("apdu_hex", "reassembled_apdu_hex"):
        if key in expect:
            assert apdu["apdu_hex"] == expect[key]
    if "security" in expect:
        want = {
            k: v
            for k, v in expect["security"].items()
            if k not in ("system_title_ascii", "aad_hex")
        }
        _subset(apdu["security"], want, "security")
        if want.get("tag_ok") is None and want.get("tag"):
            assert any("NOT checked" in w for w in apdu["warnings"])
    if "plaintext_hex" in expect:
        assert apdu["plaintext_hex"] == expect["plaintext_hex"]
    if "value" in expect:
        assert apdu["value"] == expect["value"]
    if "values" in expect:
        assert len(apdu["values"]) == len(expect["values"])
        for got, want in zip(apdu["values"], expect["values"], strict=True):
            _check_value(got, want)
    if "datetime" in expect:
        stamps = [apdu["datetime"] or "", *_strings(apdu["data"])]
        matching = [s for s in stamps if s[:19] == expect["datetime"]]
        assert matching, (expect["datetime"], stamps)
        deviation = expect.get("datetime_detail", {}).get("deviation")
        if deviation is not None:
            assert any(s.endswith(_offset(deviation)) for s in matching), matching
    if "notification_datetime" in expect:
        assert apdu["datetime"][:19] == expect["notification_datetime"]
    if "lls_password_ascii" in expect:
        password = apdu["apdu"]["calling_authentication_value"]
        assert bytes.fromhex(password).decode() == expect["lls_password_ascii"]
    if "list_id" in expect:
        assert expect["list_id"] in _strings(apdu["data"])


def test_secrets_hidden_by_default() -> None:
    vector = vector_by_id("gb-s2-ciphered-aarq-lls")
    args = [a for a in _args(vector) if a != "--show-secrets"]
    code, out, _ = _run(args)
    assert code == 0
    apdu = out["apdus"][0]
    # The decoded fields hide them (the raw hex is the engineer's own input, echoed as given).
    decoded = json.dumps([apdu["apdu"], apdu["plaintext_hex"], apdu["data"]])
    assert vector["keys"]["lls_password"] not in decoded
    assert "00112233445566778899AABBCCDDEEFF" not in decoded  # the dedicated key
    assert apdu["apdu"]["calling_authentication_value"] == "<hidden>"
    assert apdu["apdu"]["initiate_request"]["dedicated_key"] == "<hidden>"


def test_tables_by_default() -> None:
    vector = vector_by_id("v4-aidon-push")
    result = RUNNER.invoke(app, ["decode", vector["hex"]])
    assert result.exit_code == 0
    assert "1.0.32.7.0.255" in result.stdout
    assert "230.7" in result.stdout and "2307" in result.stdout  # scaled beside raw
    assert "data-notification" in result.stdout


# -- the one line on stderr ------------------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed command in a real process, stderr a pipe (not a terminal)."""
    code = "from headend.cli.app import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    "garbage",
    ["zz", "7E 7E 7E", "00 01 02 03", "0x" + "41" * 300, "7EA0" + "ab" * 80 + "7E"],
)
def test_garbage_is_exit_5_and_one_line(garbage: str) -> None:
    done = _cli("decode", garbage)
    assert done.returncode == 5, done
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr


def test_wrong_authentication_key_is_an_error_not_a_decode() -> None:
    vector = vector_by_id("v7-udp-wrapper-glo-push")
    wrong = "00" * 16
    done = _cli(
        "decode",
        vector["hex"],
        "--enc-key",
        vector["keys"]["encryption_key"],
        "--auth-key",
        wrong,
        "--json",
    )
    assert done.returncode == 5
    assert done.stderr.count("\n") == 1 and "does not verify" in done.stderr
    out = json.loads(done.stdout)
    assert out["apdus"] == []
    assert vector["expect"]["plaintext_hex"] not in done.stdout


@pytest.mark.parametrize("vector_id", ["gb-s1-glo-get-request", "gb-s2-ciphered-aarq-lls"])
def test_wrong_keys_on_service_specific_ciphering(vector_id: str) -> None:
    vector = vector_by_id(vector_id)
    args = _args(vector)
    args[args.index("--auth-key") + 1] = "11" * 16
    code, out, stderr = _run(args)
    assert code == 5
    assert "verify" in stderr
    assert out["apdus"] == []


def test_ciphered_without_keys_says_which_option() -> None:
    vector = vector_by_id("v7-udp-wrapper-glo-push")
    code, _, stderr = _run(["decode", vector["hex"], "--json"])
    assert code == 5 and "--enc-key" in stderr


def test_bad_key_option_is_a_usage_error() -> None:
    code = RUNNER.invoke(app, ["decode", "C401C1000600001391", "--enc-key", "abcd"]).exit_code
    assert code == 2


# -- what engineers paste ----------------------------------------------------------------------
def test_separators_and_prefixes() -> None:
    vector = vector_by_id("v3-get-fw-rsp")
    raw = bytes.fromhex(vector["hex"])
    spaced = " ".join(f"{b:02X}" for b in raw)
    forms = [
        " ".join(f"0x{b:02x}" for b in raw),
        ":".join(f"{b:02x}" for b in raw),
        spaced[:20] + "\n" + spaced[20:],
        "0x" + raw.hex(),
    ]
    for text in forms:
        report = decode_input(parse_hex_texts([text]))
        assert report.ok and report.apdus[0].value == "V0411", text


def test_frames_after_noise_are_still_found() -> None:
    vector = vector_by_id("v3-get-fw-rsp")
    report = decode_input(parse_hex_texts(["A0 13 " + vector["hex"]]))
    assert report.layer == "hdlc" and report.ok
    assert report.apdus[0].value == "V0411"
    assert any("skipped" in problem for problem in report.errors)


def test_get_with_blocks_is_joined() -> None:
    value = Data.array([Data.long_unsigned(n) for n in range(200)])
    raw = encode_data(value)
    parts = [raw[i : i + 150] for i in range(0, len(raw), 150)]
    apdus = [
        GetResponseWithBlock(0xC1, n == len(parts), n, part).to_bytes()
        for n, part in enumerate(parts, start=1)
    ]
    lines = "\n".join(a.hex() for a in apdus)
    report = decode_input(parse_hex_texts([lines]))
    joined = [a for a in report.apdus if a.json["type"] == "get-response-joined"]
    assert len(joined) == 1, report.errors
    assert joined[0].data[0][1] == value
    assert joined[0].json["blocks"] == list(range(1, len(parts) + 1))


def test_segmented_hdlc_and_several_wrapper_frames() -> None:
    vector = vector_by_id("v4-aidon-push")
    apdu = bytes.fromhex(vector["expect"]["apdu_hex"])
    info = b"\xe6\xe7\x00" + apdu
    pieces = [info[i : i + 128] for i in range(0, len(info), 128)]
    client, meter = HdlcAddress.client(16), HdlcAddress.server(1, 17)
    frames = b"".join(
        HdlcFrame.make(
            FrameType.UI, client, meter, segmented=i < len(pieces) - 1, info=piece
        ).to_bytes()
        for i, piece in enumerate(pieces)
    )
    report = decode_input(HexInput((frames,)))
    assert report.ok and len(report.frames) == len(pieces) > 1
    assert [a.json["type"] for a in report.apdus] == ["data-notification"]
    assert len(report.apdus[0].values) == 27
    stream = encode_wrapper(1, 16, apdu) + encode_wrapper(1, 16, apdu)
    report = decode_input(HexInput((stream,)))
    assert report.layer == "wrapper" and len(report.apdus) == 2 and not report.errors


# -- fuzz ----------------------------------------------------------------------------------------
KEYS = DecodeKeys(bytes(range(16)), bytes(range(16, 32)), b"ABCDEFGH")
_SEEDS = [
    bytes.fromhex("7EA0" + "00" * 4),
    bytes.fromhex("0001000100010004C4010000"),
    bytes.fromhex("E0C000010000"),
    bytes.fromhex("DB08"),
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=600),
        st.sampled_from(_SEEDS).flatmap(
            lambda seed: st.binary(max_size=300).map(lambda tail: seed + tail)
        ),
    )
)
def test_fuzz_pipeline_only_clean_errors(data: bytes) -> None:
    if not data:
        return
    for keys in (None, KEYS):
        report = decode_input(HexInput((data,)), keys)
        json.dumps(report.to_json(), default=str)
        assert report.ok or report.reason()
        for problem in report.errors:
            assert "\n" not in problem


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_fuzz_mutated_captures(data: st.DataObject) -> None:
    vector = vector_by_id(
        data.draw(
            st.sampled_from(["v4-aidon-push", "v8-lg-e450-plain-gbt", "v7-udp-wrapper-glo-push"])
        )
    )
    raw = bytearray(b"".join(bytes.fromhex(h) for h in _hexes(vector)))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(raw)))
    report = decode_input(HexInput((bytes(raw[:cut]),)), KEYS)
    json.dumps(report.to_json(), default=str)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        data_values, date_times.map(Data.date_time), st.binary(max_size=16).map(Data.octet_string)
    )
)
def test_fuzz_value_views(value: Data) -> None:
    """Every typed value shows, whatever its contents (wildcards, impossible dates, ...)."""
    json.dumps([typed(value), meter_values(value)], default=str)
    assert rows(value)
    if isinstance(value.value, bytes):
        assert octet_views(value.value)["hex"] == value.value.hex().upper()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=60), min_size=1, max_size=3))
def test_fuzz_hex_text_only_clean_errors(texts: list[str]) -> None:
    try:
        parsed = parse_hex_texts(texts)
    except DecodeError as exc:
        assert "\n" not in str(exc)
    else:
        assert parsed.data


def test_file_and_stdin(tmp_path) -> None:
    vector = vector_by_id("v4-aidon-push")
    text = vector["hex"]
    wrapped = "\n".join(text[i : i + 64] for i in range(0, len(text), 64))
    capture = tmp_path / "capture.txt"
    capture.write_text(wrapped)
    for args, stdin in ((["--file", str(capture)], None), (["--file", "-"], wrapped)):
        result = RUNNER.invoke(app, ["decode", *args, "--json"], input=stdin)
        assert result.exit_code == 0, result.stderr
        assert len(json.loads(result.stdout)["apdus"][0]["values"]) == 27
    missing = RUNNER.invoke(app, ["decode", "--file", str(tmp_path / "nope.txt")])
    assert missing.exit_code == 5 and missing.stderr.count("\n") == 1
