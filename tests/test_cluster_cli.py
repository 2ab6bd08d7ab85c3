"""The cluster on the command line: SQLite with the cluster refused at start (naming the key),
`headend run --workers N` starting N members that `headend status` lists and that stop with
the parent."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cluster_support import cluster
from e2e_support import eventually
from mqtt_support import forget_session

pytestmark = pytest.mark.timeout(120)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADEND_")}
    env.update(extra)
    return env


def test_sqlite_with_the_cluster_is_refused_at_start(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "headend.cli", "run"],
        env=_env(
            HEADEND_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'h.db'}",
            HEADEND_CLUSTER_ENABLED="true",
        ),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run.stderr
    assert "cluster.enabled" in run.stderr
    assert not (tmp_path / "h.db").exists()  # stopped before anything was opened


def test_workers_need_the_cluster(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "headend.cli", "run", "--workers", "2"],
        env=_env(HEADEND_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'h.db'}"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run.stderr
    assert "cluster.enabled" in run.stderr


async def test_workers_start_members_that_status_lists_and_stop_with_the_parent(
    sim_fleet, tmp_path: Path
) -> None:
    async with sim_fleet(4) as fleet, cluster(fleet, tmp_path) as c:
        env = _env(**{**c.environ, "HEADEND_CLUSTER_INSTANCE_ID": "box"})
        log = (tmp_path / "workers.log").open("ab")
        parent = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "headend.cli", "run", "--workers", "2",
            env=env, stdout=log, stderr=log,
        )  # fmt: skip
        log.close()
        try:

            async def two_members() -> list[str]:
                status = await asyncio.to_thread(
                    subprocess.run,
                    [sys.executable, "-m", "headend.cli", "status", "--json"],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert status.returncode == 0, status.stderr
                members = json.loads(status.stdout)["cluster"]["members"]
                alive = [m for m in members if m["alive"] and m["leases"] > 0]
                return sorted(m["instance_id"] for m in alive) if len(alive) == 2 else []

            assert await eventually(two_members, within=60, every=0.5) == ["box-w0", "box-w1"]
        finally:
            parent.send_signal(signal.SIGTERM)
            async with asyncio.timeout(60):
                code = await parent.wait()
            for worker in ("box-w0", "box-w1"):
                await forget_session(c.broker, f"{c.client_id}-{worker}")
        assert code == 0, (tmp_path / "workers.log").read_text()[-3000:]
        rows = await c.sql("SELECT instance_id FROM cluster_members")
        assert rows == []  # both stopped cleanly and left
        held = await c.sql("SELECT name FROM cluster_leases WHERE holder IS NOT NULL")
        assert held == []  # and gave their leases back


def test_a_cluster_needs_a_shared_broker() -> None:
    from headend.config import ConfigError, load_config

    environ = {
        "HEADEND_DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1:5432/test",
        "HEADEND_CLUSTER_ENABLED": "true",
    }
    with pytest.raises(ConfigError, match=r"mqtt\.host"):
        load_config(None, environ)
    assert load_config(None, {**environ, "HEADEND_MQTT_HOST": "broker"}).cluster.enabled
