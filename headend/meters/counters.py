"""Invocation counters for ciphered sessions, kept in the database.

A GCM invocation counter used twice under one key breaks the cipher, so the head-end never keeps
counters in memory only: every session, the daemon's and `headend read/relay --meter`'s, reserves
its counters from the repository (one atomic upsert per batch of 32, committed before use),
across restarts and processes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from drivers.session import InvocationCounterStore

if TYPE_CHECKING:
    from headend.storage import Repository

__all__ = ["RepositoryInvocationCounterStore", "invocation_counter_store"]


class RepositoryInvocationCounterStore:
    """drivers.session.InvocationCounterStore over Repository.reserve_invocation_counter."""

    __slots__ = ("at_least", "key_id", "meter_id", "repository")

    def __init__(
        self, repository: Repository, meter_id: str, key_id: str = "default", at_least: int = 1
    ) -> None:
        self.repository = repository
        self.meter_id = meter_id
        self.key_id = key_id
        self.at_least = at_least

    def __repr__(self) -> str:
        return (
            f"RepositoryInvocationCounterStore(meter_id={self.meter_id!r}, key_id={self.key_id!r})"
        )

    async def reserve(self, count: int, at_least: int = 0) -> int:
        """`at_least` (the meter's frame counter, learnt when it refused ours) lifts the stored
        counter for good: every later reservation, by any process, starts above it."""
        return await self.repository.reserve_invocation_counter(
            self.meter_id, count, key_id=self.key_id, at_least=max(self.at_least, at_least)
        )


def invocation_counter_store(
    repository: Repository, meter_id: str, key_id: str = "default"
) -> InvocationCounterStore:
    return RepositoryInvocationCounterStore(repository, meter_id, key_id)
