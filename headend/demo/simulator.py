"""The simulator fleet as a subprocess (`python -m simulators`): headend never imports
simulators, so the demo starts it as its own process and reaches it only over the network, the
meters on TCP and the relay read-out and button presses on its control port."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SIM_START_TIMEOUT_S = 60.0
READY_MODE_METER = 2  # this meter runs control mode 1: reconnection needs the button


@dataclass
class Simulator:
    process: asyncio.subprocess.Process
    control: tuple[str, int]
    inventory: Path

    async def control_request(self, request: dict[str, Any]) -> Any:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*self.control), 10)
        try:
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), 10)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        answer = json.loads(line)
        if not answer.get("ok"):
            raise RuntimeError(f"simulator control: {answer.get('error')}")
        return answer.get("result")

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


DEMO_PUSH_INTERVAL_S = 20


@contextlib.asynccontextmanager
async def start_simulator(
    workdir: Path, meters: int, push_to: str | None = None
) -> AsyncIterator[Simulator]:
    fleet_file = workdir / "fleet.toml"
    inventory = workdir / "inventory.csv"
    fleet_file.write_text(
        "[fleet]\n"
        f"meters = {meters}\n"
        'host = "127.0.0.1"\n'
        "port = 0\n"
        'transport = "wrapper"\n'
        'security = "none"\n'
        "seed = 42\n"
        "control_mode = 2\n"
        f'inventory = "{inventory}"\n'
        "control_port = 0\n"
        "\n[[meter]]\n"
        f"index = {READY_MODE_METER}\n"
        "control_mode = 1\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulators",
        "--fleet",
        str(fleet_file),
        # It stops on its own once we are gone, however we die (SIGKILL included): no
        # simulator is left holding its ports after a closed terminal or a killed demo.
        "--parent-pid",
        str(os.getpid()),
        # The meters also push to the head-end's listener (readings and their events).
        *(["--push-to", push_to, "--push-interval", str(DEMO_PUSH_INTERVAL_S)] if push_to else []),
        stdout=asyncio.subprocess.PIPE,
        stderr=(workdir / "simulator.log").open("ab"),
        # Its own session: Ctrl-C in the terminal interrupts the demo, which then stops the
        # simulator itself after the summary, instead of both dying at once.
        start_new_session=True,
    )
    control: tuple[str, int] | None = None
    try:
        assert process.stdout is not None
        async with asyncio.timeout(SIM_START_TIMEOUT_S):
            while True:
                raw = await process.stdout.readline()
                if not raw:
                    raise RuntimeError(
                        f"the simulator exited early (see {workdir / 'simulator.log'})"
                    )
                line = raw.decode().strip()
                if line.startswith("control:"):
                    host, _, port = line.split(":", 1)[1].strip().rpartition(":")
                    control = (host, int(port))
                if line.startswith("ready:"):
                    break
        assert control is not None, "the simulator did not open its control port"
        simulator = Simulator(process, control, inventory)
        yield simulator
    finally:
        sim = Simulator(process, control or ("127.0.0.1", 0), inventory)
        await sim.stop()
