"""Leases on meters in PostgreSQL: each member holds a fair share of the shards, renews them
every lease_s / 3, and talks only to the meters of the leases it holds (ownership.py).

A meter's lease is named by its line, the thing that allows one session at a time: TCP lines
(a meter's own socket, or a terminal server's port shared by an RS-485 bus) are hashed into
`SHARDS` shards, `shard:NNN`; a serial line is its own lease, `line:serial:/dev/...`, claimed
only by a member on whose host that device exists (so serial lines stay with the box they
are plugged into; give ports names that are unique across hosts, e.g. /dev/serial/by-id/...).
All meters of a line are under one lease, so one session per line holds across members.

Claiming is `SELECT ... FOR UPDATE SKIP LOCKED` of free or expired rows; each new holder
raises `epoch` (the fencing token). Renewal is one UPDATE of this member's unexpired rows; a
row it no longer gets back is lost (taken over, or expired while the process was paused) and
dropped at once. The local deadline of a lease is taken from the loop clock *before* the
renewal was sent, minus a margin, so it always falls before the database's `expires_at`: a
session is cancelled at that deadline (ownership.guard), and no other member can claim the
lease before `expires_at`. So no meter has two sessions at once, and a member paused past its
lease finds its sessions cancelled and its results refused by the fence when it wakes. A
transaction it was frozen in is ended by PostgreSQL after lease_s / 2 idle (the daemon opens
its databases with that idle_in_transaction_session_timeout), releasing the fence's lock, so
its leases are claimable by then, and its row locks on meters and commands, so the new
holder's writes do not wait for it to wake.

Fair share is ceil(shards / live members); a member above it releases its surplus shards once
their sessions have ended (a joining member gets work at once), one below it claims free or
expired ones. A shard expired for a whole lease more is claimed by anyone (no orphans).
A member that dies loses its leases after lease_s; the others claim them at their next
renewal: meters are taken over within lease_s + lease_s / 3."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from headend.cluster import members
from headend.cluster.evict import Evictor
from headend.cluster.ownership import LeaseLost, LeaseToken, current_token, set_current
from headend.observability import metrics
from headend.storage import Database

__all__ = ["SHARDS", "ClusterOwnership", "lease_name"]

log = logging.getLogger(__name__)

SHARDS = 64
"""Shards of the TCP lines: enough for a fair split among tens of members, few enough that
claiming and renewing them is a handful of rows."""

_SECS = "make_interval(secs => :lease_s)"
_RENEW = text(
    f"UPDATE cluster_leases SET expires_at = now() + {_SECS} "
    "WHERE holder = :me AND expires_at > now() RETURNING name, epoch"
)
_CLAIM = text(
    f"""
    WITH picked AS (
        SELECT name FROM cluster_leases
        WHERE name LIKE :pattern AND (holder IS NULL OR expires_at < now())
          AND (expires_at IS NULL OR expires_at < now() - {_SECS} * :grace)
          AND (CAST(:names AS text[]) IS NULL OR name = ANY(CAST(:names AS text[])))
        ORDER BY random() LIMIT :k FOR UPDATE SKIP LOCKED
    )
    UPDATE cluster_leases AS l
    SET holder = :me, epoch = l.epoch + 1, expires_at = now() + {_SECS}, acquired_at = now()
    FROM picked WHERE l.name = picked.name
    RETURNING l.name, l.epoch
    """
)
_RELEASE = text(
    "UPDATE cluster_leases SET holder = NULL, expires_at = now() "
    "WHERE name = :name AND holder = :me AND epoch = :epoch"
)
_FENCE = text(
    "SELECT 1 FROM cluster_leases WHERE name = :name AND holder = :me AND epoch = :epoch "
    "AND expires_at > now() FOR SHARE"
)
_INTERRUPTED = text(
    "SELECT DISTINCT meter_id FROM commands WHERE status = 'sent' AND next_attempt_at > now()"
)
_RESUME = text(
    "UPDATE commands SET next_attempt_at = now() "
    "WHERE status = 'sent' AND next_attempt_at > now() AND meter_id = ANY(:meters) "
    "RETURNING meter_id"
)
"""Attempts the previous holder had under way when it lost the lease (it died, froze, or was
cut off; its session was fenced): due now, not after that attempt's backoff, which it set
in case it died mid-attempt and grows to minutes with the attempts."""
_ENSURE = text("INSERT INTO cluster_leases (name) VALUES (:name) ON CONFLICT (name) DO NOTHING")


def lease_name(transport: str, line: str) -> str:
    """The lease a meter is under (see the module docstring)."""
    if transport == "serial":
        return f"line:{line}"
    return f"shard:{zlib.crc32(line.encode()) % SHARDS:03d}"


def serial_device(lease: str) -> str | None:
    """`line:serial:/dev/ttyUSB0` -> `/dev/ttyUSB0`; None for a shard."""
    prefix = "line:serial:"
    return lease[len(prefix) :] if lease.startswith(prefix) else None


@dataclass(eq=False)
class _Held:
    token: LeaseToken
    deadline: float  # loop time
    releasing: bool = False
    sessions: set[asyncio.Timeout] = field(default_factory=set)


class ClusterOwnership:
    """This member's leases (MeterOwnership); `run()` claims and renews them."""

    def __init__(
        self,
        db: Database,
        instance_id: str,
        lease_s: float,
        *,
        load: Callable[[], Mapping[str, Any]] | None = None,
        device_exists: Callable[[str], bool] = os.path.exists,
    ) -> None:
        self.db = db
        self.me = instance_id
        self.lease_s = lease_s
        self.renew_s = lease_s / 3
        # The local deadline stops this much before the lease: room for a slow renewal
        # round trip and for clocks that tick a little apart.
        self.margin_s = min(1.0, lease_s * 0.1)
        self._idle_limit = text(
            f"SET LOCAL idle_in_transaction_session_timeout = {max(100, int(lease_s * 500))}"
        )
        self._load = load or dict
        self._device_exists = device_exists
        self._held: dict[str, _Held] = {}
        self._lease_of: dict[str, str] = {}
        self._lines: set[str] = set()
        self._ensured: set[str] = set()
        self.listeners: set[Callable[[], None]] = set()
        """Called when the set of held leases changed (the collection re-reads its meters)."""
        self.resumed: set[Callable[[str], None]] = set()
        """Called per meter whose interrupted command a claim made due (the relay wakes)."""
        self.ready = asyncio.Event()
        self._stopping = False
        self.evictor = Evictor(db, instance_id, lease_s)

    def __repr__(self) -> str:
        return f"ClusterOwnership({self.me!r}, leases={len(self._held)})"

    # -- MeterOwnership ----------------------------------------------------------------------
    def owns(self, meter_id: str) -> LeaseToken | None:
        lease = self._lease_of.get(meter_id)
        held = self._held.get(lease) if lease is not None else None
        if held is None or held.releasing or self._now() >= held.deadline:
            return None
        return held.token

    def enter(self, meter_id: str) -> LeaseToken | None:
        token = self.owns(meter_id)
        set_current(token)
        return token

    @contextlib.asynccontextmanager
    async def guard(self, meter_id: str) -> AsyncIterator[LeaseToken | None]:
        token = self.owns(meter_id)
        entered = current_token()
        if token is None or (entered is not None and entered != token):
            raise LeaseLost(f"{meter_id}: not held by {self.me}")
        held = self._held[token.name]
        set_current(token)  # what the session's results are fenced with (this task's)
        timeout = asyncio.timeout_at(held.deadline)
        held.sessions.add(timeout)
        try:
            async with timeout:
                yield token
        except TimeoutError as exc:
            if timeout.expired() and held.deadline <= self._now():
                raise LeaseLost(f"{meter_id}: lease {token.name} ran out mid-session") from exc
            raise
        finally:
            held.sessions.discard(timeout)

    async def fence(self) -> None:
        token = current_token()
        if token is None:
            return
        held = self._held.get(token.name)
        if held is None or held.token != token or self._now() >= held.deadline:
            raise LeaseLost(f"lease {token.name} epoch {token.epoch} is no longer held")
        # Joins the task's unit of work. The FOR SHARE lock keeps the lease from being
        # claimed until that transaction ends; a member frozen inside it (SIGSTOP, a stalled
        # VM) must not keep it for ever: PostgreSQL ends a transaction left idle for half a
        # lease.
        if not await self.holds(token):
            raise LeaseLost(f"lease {token.name} epoch {token.epoch} was taken over")

    async def holds(self, token: LeaseToken) -> bool:
        """`fence()` for a given token, as a yes/no (for work that commits in another task's
        unit of work: a poll's read-back in the readings batch, cluster/fenced.py)."""
        held = self._held.get(token.name)
        if held is None or held.token != token or self._now() >= held.deadline:
            return False
        async with self.db.transaction() as session:
            await session.execute(self._idle_limit)
            row = await session.execute(
                _FENCE, {"name": token.name, "me": self.me, "epoch": token.epoch}
            )
            return row.first() is not None

    def track(self, records: Iterable[Any]) -> None:
        lease_of: dict[str, str] = {}
        for record in records:
            lease_of[record.meter_id] = lease_name(record.transport, record.line)
        self._lease_of = lease_of
        self._lines = {
            name
            for name in set(lease_of.values())
            if (device := serial_device(name)) is not None and self._device_exists(device)
        }

    # -- what status and tests read ----------------------------------------------------------
    @property
    def leases(self) -> list[str]:
        return sorted(n for n, h in self._held.items() if not h.releasing)

    def owned_meters(self) -> int:
        return sum(1 for m in self._lease_of if self.owns(m) is not None)

    # -- the keeper --------------------------------------------------------------------------
    async def run(self) -> None:
        """Claim and renew until cancelled; on the way out, release what is held (after the
        sessions stopped: the daemon cancels this task last)."""
        try:
            while not self._stopping:
                try:
                    await self.tick()
                except Exception:
                    log.exception("cluster lease renewal failed; retrying")
                metrics.CLUSTER_LEASES.labels(member=self.me).set(len(self.leases))
                self.ready.set()
                await asyncio.sleep(self.renew_s)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.leave())

    async def tick(self) -> None:
        """One round: heartbeat and renewal, releases, claims."""
        started = self._now()
        lost: list[str] = []
        async with self.db.transaction() as session:
            await members.heartbeat(session, self.me, self._member_load())
            renewed = {
                row.name: row.epoch
                for row in await session.execute(_RENEW, {"me": self.me, "lease_s": self.lease_s})
            }
        deadline = started + self.lease_s - self.margin_s
        for name, held in list(self._held.items()):
            if renewed.get(name) != held.token.epoch:
                lost.append(name)
                self._drop(name)
                continue
            held.deadline = deadline
            for timeout in held.sessions:
                if not timeout.expired():
                    timeout.reschedule(deadline)
        if lost:
            log.warning("cluster: lost %d lease(s): %s", len(lost), ", ".join(sorted(lost)[:8]))
        changed = bool(lost)
        changed |= await self._release_surplus()
        try:  # before claiming: the dead member's locks go first (cluster/evict.py)
            await self.evictor.run_once()
        except Exception:
            log.exception("cluster: ending a dead member's sessions failed; retrying")
        changed |= await self._claim(started)
        if changed:
            for listener in tuple(self.listeners):
                listener()

    async def _release_surplus(self) -> bool:
        released = False
        for name, held in list(self._held.items()):
            if not held.releasing or held.sessions:
                continue
            async with self.db.transaction() as session:
                await session.execute(
                    _RELEASE, {"name": name, "me": self.me, "epoch": held.token.epoch}
                )
            self._drop(name)
            released = True
        return released

    async def _claim(self, started: float) -> bool:
        async with self.db.transaction() as session:
            await self._ensure_rows(session)
            live = max(1, await members.live_members(session, self.lease_s))
            fair = math.ceil(SHARDS / live)
            shards = [
                n for n, h in self._held.items() if n.startswith("shard:") and not h.releasing
            ]
            got: list[tuple[str, int]] = []
            if len(shards) < fair:
                got += await self._claim_rows(session, "shard:%", fair - len(shards), None, 0)
            elif len(shards) > fair:
                for name in sorted(shards)[fair:]:
                    self._held[name].releasing = True
            # Orphans: expired a whole lease ago and nobody took them (shares disagree).
            got += await self._claim_rows(session, "shard:%", SHARDS, None, 1)
            wanted = sorted(self._lines - set(self._held))
            if wanted:
                got += await self._claim_rows(session, "line:%", len(wanted), wanted, 0)
            resumed = await self._resume(session, {name for name, _ in got})
        deadline = started + self.lease_s - self.margin_s
        for name, epoch in got:
            self._held[name] = _Held(LeaseToken(name, epoch), deadline)
        if got:
            log.info("cluster: %s took %d lease(s)", self.me, len(got))
        if resumed:
            log.info("cluster: %d interrupted command(s) resumed at once", len(resumed))
        for meter_id in resumed:
            for wake in tuple(self.resumed):
                wake(meter_id)
        return bool(got) or any(h.releasing and not h.sessions for h in self._held.values())

    async def _resume(self, session: AsyncSession, claimed: set[str]) -> list[str]:
        """Make the interrupted attempts on the meters of the leases just claimed due now
        (_RESUME); the few commands in flight fleet-wide are read, not every claimed meter
        sent (a claim at start-up covers a whole share of the fleet)."""
        if not claimed:
            return []
        in_flight = (await session.execute(_INTERRUPTED)).scalars()
        meters = [m for m in in_flight if self._lease_of.get(m) in claimed]
        if not meters:
            return []
        return list((await session.execute(_RESUME, {"meters": meters})).scalars())

    async def _claim_rows(
        self, session: AsyncSession, pattern: str, k: int, names: list[str] | None, grace: int
    ) -> list[tuple[str, int]]:
        rows = await session.execute(
            _CLAIM,
            {
                "pattern": pattern,
                "k": k,
                "names": names,
                "me": self.me,
                "lease_s": self.lease_s,
                "grace": grace,
            },
        )
        return [(row.name, row.epoch) for row in rows]

    async def _ensure_rows(self, session: AsyncSession) -> None:
        wanted = {f"shard:{i:03d}" for i in range(SHARDS)} | self._lines
        missing = sorted(wanted - self._ensured)
        if missing:
            await session.execute(_ENSURE, [{"name": name} for name in missing])
            self._ensured |= set(missing)

    async def leave(self) -> None:
        """Give every lease back and remove the member row (a clean stop): the others take
        the meters over at their next renewal instead of after lease_s."""
        self._stopping = True
        held = list(self._held.items())
        self._held.clear()
        async with self.db.transaction() as session:
            for name, h in held:
                await session.execute(
                    _RELEASE, {"name": name, "me": self.me, "epoch": h.token.epoch}
                )
            await members.forget(session, self.me)

    def _drop(self, name: str) -> None:
        held = self._held.pop(name, None)
        if held is None:
            return
        for timeout in held.sessions:
            if not timeout.expired():
                timeout.reschedule(self._now())  # cancel at once: the lease is gone

    def _member_load(self) -> dict[str, Any]:
        return {"leases": len(self._held), "meters": self.owned_meters(), **self._load()}

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()
