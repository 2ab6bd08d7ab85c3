"""End to end, relay control: the daemon with the simulator fleet, a real broker and a real
database, driven as an operator and a field engineer would (the `headend` command line, a
direct DLMS session behind the head-end's back, the customer's button).

Operator holds against billing, drift found by polls both ways, a customer who never presses
the button, and the arrears notice for a meter that was already off."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

import pytest
from db_support import DIALECTS
from e2e_support import eventually
from test_daemon_e2e import Headend, headend
from typer.testing import CliRunner

from drivers.connect import open_session
from headend.cli.app import app

pytestmark = pytest.mark.timeout(240)

FAST_POLLS = {"HEADEND_POLLING_INTERVAL_S": "2"}


async def cli(h: Headend, *args: str) -> subprocess.CompletedProcess[str]:
    """`headend ...` in its own process, sharing only the database with the daemon (which
    runs in this event loop: the CLI is waited for in a thread, never blocking it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADEND_")}
    env.update(h.environ)
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "headend.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=h.tmp_path,
        env=env,
    )


async def cli_json(h: Headend, *args: str) -> Any:
    run = await cli(h, *args, "--json")
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout)


def polled(h: Headend, index: int) -> list[dict[str, Any]]:
    """Retained relay messages from polls (not from commands)."""
    return [r for r in h.out("relay", index) if r["reason"] == "poll"]


async def polls_after(h: Headend, index: int, count: int = 2) -> None:
    """Wait until `count` more polls read the relay: the last of them began after now."""
    seen = len(polled(h, index))
    await eventually(
        lambda: len(polled(h, index)) >= seen + count, what=f"{count} more polls of meter {index}"
    )


async def confirmed(h: Headend, index: int, action: str) -> None:
    """A command for `action` confirmed: the opening balance's, say (a meter already where
    it should be looks settled before the event has even arrived)."""
    await eventually(
        lambda: [
            c
            for c in h.out("commands", index)
            if c["action"] == action and c["status"] == "confirmed"
        ],
        what=f"{action} confirmed",
    )


def alarms(h: Headend, kind: str, index: int) -> list[dict[str, Any]]:
    return [a for a in h.out("alarms") if a["type"] == kind and a["meter_id"] == h.ids[index]]


async def switch_behind_the_headends_back(h: Headend, sim_connection: Any, action: str) -> None:
    """What `headend relay --host ...` does: a session of its own, straight to the meter."""
    async with open_session(sim_connection(h.fleet, 0), timeout=5) as session:
        status = await (session.reconnect() if action == "reconnect" else session.disconnect())
    assert status.state == ("connected" if action == "reconnect" else "disconnected")


# -- operator holds -------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_hold_pins_the_relay_against_billing_until_released(
    sim_fleet, tmp_path, dialect: str
) -> None:
    async with (
        sim_fleet(1) as fleet,
        headend(fleet, tmp_path, dialect=dialect, overrides=FAST_POLLS) as h,
    ):
        meter_id = h.ids[0]
        await h.balance(0, "50.00", 1)
        await confirmed(h, 0, "reconnect")

        queued = await cli_json(
            h, "relay", "--meter", meter_id, "disconnect", "--reason", "line work", "--hold"
        )
        assert queued["status"] == "queued" and queued["hold"] is True
        await h.wait_state(0, "disconnected")  # the running daemon picked it up
        held = await eventually(
            lambda: [r for r in h.out("relay", 0) if r["state"] == "disconnected"],
            what="the held state published",
        )
        assert held[-1]["hold"] is True

        # Billing pays: the event is stored and moves the desired state, nothing switches.
        await h.balance(0, "60.00", 2)
        repository = h.repository
        assert repository is not None

        async def stored() -> list[dict[str, Any]]:
            return [e for e in await repository.balance_events(meter_id) if e["seq"] == 2]

        (event,) = await eventually(stored, what="the paying event stored")
        assert event["outcome"] == "applied" and "held by an operator" in event["detail"]
        await polls_after(h, 0)
        assert h.sim_state(0) == "disconnected"
        assert [op["transition"] for op in h.remote_ops(0)] == ["remote_disconnect"]
        assert await h.settled(0)
        assert polled(h, 0)[-1]["hold"] is True

        # The hold is visible, and a plain command cannot undo it.
        status = await cli_json(h, "status")
        assert [(x["meter_id"], x["held_state"], x["desired_state"]) for x in status["holds"]] == [
            (meter_id, "disconnected", "connected")
        ]
        show = await cli_json(h, "meters", "show", meter_id)
        assert show["hold"] is True and show["hold_reason"] == "operator: line work"
        refused = await cli(h, "relay", "--meter", meter_id, "reconnect", "--reason", "oops")
        assert refused.returncode == 1 and "held" in refused.stderr

        # Released: the meter goes where its newest balance says, at once.
        released = await cli_json(h, "relay", "--meter", meter_id, "release", "--reason", "done")
        assert released["command"] == "reconnect" and released["status"] == "queued"
        await h.wait_state(0, "connected")
        back = await eventually(
            lambda: [r for r in h.out("relay", 0) if r["state"] == "connected" and not r["hold"]],
            what="the released state published",
        )
        assert back[-1]["hold"] is False
        assert (await cli_json(h, "status"))["holds"] == []
        not_held = await cli(h, "relay", "--meter", meter_id, "release", "--reason", "again")
        assert not_held.returncode == 1 and "not held" in not_held.stderr


# -- drift ----------------------------------------------------------------------------------------


async def test_a_relay_switched_on_behind_the_headends_back_in_arrears_is_switched_off_again(
    sim_fleet, sim_connection, tmp_path
) -> None:
    async with sim_fleet(1) as fleet, headend(fleet, tmp_path, overrides=FAST_POLLS) as h:
        await h.balance(0, "-5.00", 1)
        await h.wait_state(0, "disconnected")
        await switch_behind_the_headends_back(h, sim_connection, "reconnect")

        (alarm,) = await eventually(
            lambda: alarms(h, "relay_state_mismatch", 0), what="relay_state_mismatch"
        )
        assert "relay read back connected" in alarm["detail"]
        assert any(r["state"] == "connected" for r in polled(h, 0))  # the topic follows polls
        drift = await eventually(
            lambda: [
                c
                for c in h.out("commands", 0)
                if c.get("source") == "drift" and c["status"] == "confirmed"
            ],
            what="a drift command confirmed",
        )
        assert drift[0]["action"] == "disconnect"
        await h.wait_state(0, "disconnected")
        ops = [(op["transition"], op["after"]) for op in h.remote_ops(0)]
        assert ops[-1] == ("remote_disconnect", "disconnected")
        assert h.repository is not None
        standing = await h.repository.list_alarms(meter_id=h.ids[0])
        assert "relay_state_mismatch" not in [a.type for a in standing]  # cleared on confirm


async def test_a_relay_switched_off_behind_the_headends_back_while_paid_is_only_alarmed(
    sim_fleet, sim_connection, tmp_path
) -> None:
    async with sim_fleet(1) as fleet, headend(fleet, tmp_path, overrides=FAST_POLLS) as h:
        await h.balance(0, "50.00", 1)
        await confirmed(h, 0, "reconnect")
        await switch_behind_the_headends_back(h, sim_connection, "disconnect")

        (alarm,) = await eventually(
            lambda: alarms(h, "relay_state_mismatch", 0), what="relay_state_mismatch"
        )
        assert "not reconnected by the head-end" in alarm["detail"]
        await polls_after(h, 0)
        assert h.sim_state(0) == "disconnected"  # never a forced reconnect
        assert [op["transition"] for op in h.remote_ops(0)] == ["remote_disconnect"]
        assert await h.settled(0)
        assert polled(h, 0)[-1]["state"] == "disconnected"
        assert len(alarms(h, "relay_state_mismatch", 0)) == 1  # once while it stands


# -- the customer's button ------------------------------------------------------------------------


async def test_a_customer_who_never_presses_the_button_raises_awaiting_customer_once(
    sim_fleet, tmp_path
) -> None:
    overrides = {**FAST_POLLS, "HEADEND_RELAY_OVERDUE_AFTER_S": "3"}
    async with sim_fleet(1) as fleet, headend(fleet, tmp_path, overrides=overrides) as h:
        fleet.set_control_mode(0, 1)  # a remote reconnect only arms the button
        await h.balance(0, "-1.00", 1)
        await h.wait_state(0, "disconnected")
        await h.balance(0, "5.00", 2)
        await h.wait_state(0, "ready_for_reconnection")

        def ready_notices() -> list[dict[str, Any]]:
            return [n for n in h.out("notifications", 0) if n["type"] == "ready_for_reconnection"]

        (alarm,) = await eventually(
            lambda: alarms(h, "awaiting_customer", 0), what="awaiting_customer"
        )
        assert "has not pressed the button" in alarm["detail"]
        await eventually(lambda: len(ready_notices()) == 2, what="the notice repeated")
        await polls_after(h, 0, 3)  # well past the limit again: still once
        assert len(alarms(h, "awaiting_customer", 0)) == 1 and len(ready_notices()) == 2

        fleet.press_button(0)
        repository = h.repository
        assert repository is not None

        async def cleared() -> bool:
            standing = await repository.list_alarms(meter_id=h.ids[0])
            return not [a for a in standing if a.type == "awaiting_customer"]

        await eventually(cleared, what="awaiting_customer cleared by a poll")


# -- arrears notice -------------------------------------------------------------------------------


async def test_arrears_are_notified_also_when_the_meter_was_already_off(
    sim_fleet, tmp_path
) -> None:
    async with sim_fleet(1) as fleet, headend(fleet, tmp_path, overrides=FAST_POLLS) as h:
        fleet.meter(0).force_state(0)  # off (disconnected) before billing says anything
        assert h.sim_state(0) == "disconnected"
        await h.balance(0, "-5.00", 1)
        notice = await eventually(
            lambda: [
                n for n in h.out("notifications", 0) if n["type"] == "disconnected_for_arrears"
            ],
            what="disconnected_for_arrears",
        )
        assert notice[0]["balance"] == "-5.00"
        assert h.remote_ops(0) == []  # read back, not operated


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["release", "--reason", "x"], "release lifts an operator's hold: it needs --meter"),
        (["disconnect", "--hold", "--reason", "x"], "--hold goes with --meter"),
        (["release", "--meter", "M1", "--hold", "--reason", "x"], "--hold goes with --meter"),
        (["status", "--meter", "M1", "--hold"], "--hold goes with --meter"),
        (["release", "--meter", "M1"], "an operator override needs --reason"),
    ],
)
def test_hold_and_release_arguments_are_checked_before_anything_connects(
    args: list[str], message: str
) -> None:
    result = CliRunner(mix_stderr=False).invoke(app, ["relay", *args])
    assert result.exit_code == 2
    assert message in " ".join(result.stderr.split())
