"""`headend run --workers N`: N members of the cluster on this host, one process (one event
loop, one core) each, supervised by the parent.

Each worker is `python -m headend.cli run` with the same config and environment, and its own
instance_id (`{instance_id or hostname-pid}-w{i}`). Workers die with the parent: the kernel
sends them SIGTERM when it goes (PR_SET_PDEATHSIG, Linux), and the parent passes SIGTERM /
SIGINT on and waits for them to stop cleanly (each gives its leases back). A worker that
exits on its own is started again after a backoff, and the parent logs it."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

__all__ = ["run_workers", "worker_ids"]

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
STOP_GRACE_S = 60.0


def worker_ids(base: str, count: int) -> list[str]:
    return [f"{base}-w{i}" for i in range(count)]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


async def run_workers(
    count: int,
    *,
    base_id: str,
    config: Path | None,
    environ: Mapping[str, str] | None = None,
    backoff_max_s: float = 30.0,
) -> int:
    """Run `count` members until SIGTERM/SIGINT; 0 when all stopped cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    base_env = dict(os.environ if environ is None else environ)
    args = [sys.executable, "-m", "headend.cli", "run"]
    if config is not None:
        args[4:4] = ["--config", str(config)]
    codes: dict[str, int] = {}

    async def supervise(instance_id: str) -> None:
        failures = 0
        env = {**base_env, "HEADEND_CLUSTER_INSTANCE_ID": instance_id}
        while not stop.is_set():
            proc = await asyncio.create_subprocess_exec(*args, env=env, preexec_fn=_die_with_parent)
            log.info("worker %s started (pid %d)", instance_id, proc.pid)
            waiter = asyncio.ensure_future(proc.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not waiter.done():
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(waiter, STOP_GRACE_S)
                except TimeoutError:
                    proc.kill()
                    await waiter
            codes[instance_id] = waiter.result()
            if stop.is_set():
                return
            failures += 1
            delay = min(backoff_max_s, 2.0**failures)
            log.error(
                "worker %s exited with %s; starting it again in %.0fs",
                instance_id,
                waiter.result(),
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    try:
        async with asyncio.TaskGroup() as tg:
            for instance_id in worker_ids(base_id, count):
                tg.create_task(supervise(instance_id))
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return 0 if all(code == 0 for code in codes.values()) else 1
