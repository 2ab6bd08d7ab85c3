"""The daemon's and the simulator's event loop: uvloop where it is installed, asyncio's own
loop otherwise or when HEADEND_EVENT_LOOP=asyncio refuses it."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from drivers.event_loop import EVENT_LOOP_ENV, loop_factory, loop_name, run


async def _loop_module() -> str:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__


def test_refused_uvloop_means_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EVENT_LOOP_ENV, "asyncio")
    assert loop_factory() is None and loop_name() == "asyncio"
    assert run(_loop_module()).startswith("asyncio")


def test_uvloop_is_used_where_it_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EVENT_LOOP_ENV, raising=False)
    installed = importlib.util.find_spec("uvloop") is not None
    assert loop_name() == ("uvloop" if installed else "asyncio")
    assert run(_loop_module()).startswith("uvloop" if installed else "asyncio")
