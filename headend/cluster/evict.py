"""Ending the database sessions of a member presumed dead, so its locks go with it.

A member frozen inside a transaction (SIGSTOP, a stalled VM, a partition that left its TCP
connections open) keeps the row locks it took: on meters, commands, the meter keys of a
first reading. Between two statements the server ends such a transaction after half a lease
idle (storage/db.py). In the middle of one whose server waits for the client's data, a COPY
of readings most of all, the transaction is not idle and no server timeout applies (not even
statement_timeout: the server does not act on a cancel while it reads from the client), so
the new holder's writes to those rows would wait for as long as the old one stays frozen,
and with them its polls and relay commands.

So every member's sessions carry `application_name` = "headend/<instance_id>", and each
member, at each lease round, terminates the sessions of every member whose heartbeat is
older than a lease (`pg_terminate_backend`): the member presumed dead whose leases are being
taken over. Its transactions roll back at once. Should it wake, its connections are gone, its
results are refused by the fence anyway, and its next heartbeat makes it a member again.
Only sessions opened while it was alive go (up to a lease after its last heartbeat: a frozen
process opens none after): a member restarted under the same instance id opens new ones
before its first heartbeat (its migrations, say), and those are left alone.

PostgreSQL lets a role terminate the sessions of its own role (and members of
pg_signal_backend any non-superuser's): members that share a database role, as they should,
need nothing more. Where the role may not, one warning says so and the idle limit is what
remains."""

from __future__ import annotations

import logging

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from headend.storage import Database

__all__ = ["APPLICATION_PREFIX", "Evictor", "application_name"]

log = logging.getLogger(__name__)

APPLICATION_PREFIX = "headend/"
_NAME_MAX = 63  # PostgreSQL truncates application_name to NAMEDATALEN - 1

_EVICT = text(
    f"""
    SELECT m.instance_id, a.pid, pg_terminate_backend(a.pid) AS ended
    FROM cluster_members AS m
    JOIN pg_stat_activity AS a
      ON a.application_name = left('{APPLICATION_PREFIX}' || m.instance_id, {_NAME_MAX})
    WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
      AND m.instance_id <> :me
      AND m.heartbeat_at < now() - make_interval(secs => :lease_s)
      AND a.backend_start <= m.heartbeat_at + make_interval(secs => :lease_s)
    """
)


def application_name(instance_id: str) -> str:
    """What a member's database sessions are called (pg_stat_activity shows it too)."""
    return f"{APPLICATION_PREFIX}{instance_id}"[:_NAME_MAX]


class Evictor:
    """Run at each lease round (leases.py); remembers when the role may not terminate."""

    def __init__(self, db: Database, me: str, lease_s: float) -> None:
        self.db = db
        self.me = me
        self.lease_s = lease_s
        self.allowed = True
        self.ended = 0

    def __repr__(self) -> str:
        return f"Evictor({self.me!r}, ended={self.ended})"

    async def run_once(self) -> int:
        """Terminate the dead members' sessions; returns how many ended."""
        if not self.allowed:
            return 0
        try:
            async with self.db.transaction() as session:
                rows = (
                    await session.execute(_EVICT, {"me": self.me, "lease_s": self.lease_s})
                ).all()
        except DBAPIError as exc:
            if "permission" not in str(exc).lower() and "must be" not in str(exc).lower():
                raise
            self.allowed = False
            log.warning(
                "cluster: this database role may not end a dead member's sessions (%s); a "
                "member frozen in the middle of a statement keeps its locks until it wakes",
                str(exc).splitlines()[0][:200],
            )
            return 0
        ended = [row for row in rows if row.ended]
        if ended:
            self.ended += len(ended)
            log.warning(
                "cluster: ended %d database session(s) of member(s) presumed dead: %s",
                len(ended),
                ", ".join(sorted({row.instance_id for row in ended})),
            )
        return len(ended)
