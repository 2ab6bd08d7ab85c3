"""SIGUSR1's task dump (observability/tasks.py): every task, named, with the line it waits at."""

from __future__ import annotations

import asyncio
import logging

import pytest

from headend.observability.tasks import dump_tasks, task_report


async def _parked_on_a_lock(lock: asyncio.Lock) -> None:
    async with lock:
        pass


async def test_a_stuck_task_is_named_with_where_it_waits(caplog: pytest.LogCaptureFixture) -> None:
    lock = asyncio.Lock()
    await lock.acquire()
    task = asyncio.create_task(_parked_on_a_lock(lock), name="relay:M1")
    await asyncio.sleep(0)
    try:
        (line,) = [entry for entry in task_report() if entry.startswith("relay:M1:")]
        assert "_parked_on_a_lock (tests/test_task_dump.py:" in line
        with caplog.at_level(logging.WARNING, logger="headend.observability.tasks"):
            dump_tasks()
        assert "relay:M1: _parked_on_a_lock" in caplog.text
    finally:
        lock.release()
        await task
    assert not any(entry.startswith("relay:M1:") for entry in task_report())
