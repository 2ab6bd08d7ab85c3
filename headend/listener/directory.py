"""Who sent a push (sans-IO): the inventory's meters by system title, by logical device name
or serial number, and by the address they are known at.

Built from the decrypted inventory records (MeterAccess) so a lookup costs a dict access; the
keys a ciphered push is checked with are made here and never leave it in a repr. A system
title is what a ciphered push carries; a plain push is only as trustworthy as the network it
came over, so the address it came from ("wrapper address": the peer host, or the HDLC
server address with it) and the logical device name in its body are the ways to tell."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from cosem_objects.security import SecurityKeys
from headend.meters.inventory import MeterRecord

__all__ = ["Directory", "KnownMeter"]


@dataclass(frozen=True, slots=True)
class KnownMeter:
    meter_id: str
    transport: str
    host: str | None
    server_logical: int
    server_physical: int | None
    keys: SecurityKeys | None
    """The meter's global keys (None for a meter without ciphering): what a push must verify
    with. Never shown (SecurityKeys hides itself in repr)."""


def _keys(record: MeterRecord) -> SecurityKeys | None:
    if record.enc_key is None:
        return None
    auth = None if record.auth_key is None else record.auth_key.reveal()
    try:
        return SecurityKeys(record.enc_key.reveal(), auth)
    except ValueError:
        return None


class Directory:
    def __init__(self, records: Iterable[MeterRecord] = ()) -> None:
        self._by_id: dict[str, KnownMeter] = {}
        self._by_title: dict[bytes, str] = {}
        self._by_host: dict[str, list[str]] = {}
        self._titles: dict[str, bytes] = {}
        self.update(records)

    def __len__(self) -> int:
        return len(self._by_id)

    def __repr__(self) -> str:
        return f"Directory(meters={len(self._by_id)})"

    def update(self, records: Iterable[MeterRecord]) -> None:
        """Replace the directory with these records (the inventory as it is now)."""
        by_id: dict[str, KnownMeter] = {}
        by_title: dict[bytes, str] = {}
        by_host: dict[str, list[str]] = {}
        for r in records:
            known = KnownMeter(
                r.meter_id, r.transport, r.host, r.server_logical, r.server_physical, _keys(r)
            )
            by_id[r.meter_id] = known
            if r.system_title:
                by_title[bytes(r.system_title)] = r.meter_id
            if r.host:
                by_host.setdefault(r.host, []).append(r.meter_id)
        self._by_id, self._by_title, self._by_host = by_id, by_title, by_host
        self._titles = {meter_id: title for title, meter_id in by_title.items()}

    def get(self, meter_id: str) -> KnownMeter | None:
        return self._by_id.get(meter_id)

    def by_system_title(self, title: bytes) -> KnownMeter | None:
        meter_id = self._by_title.get(bytes(title))
        return None if meter_id is None else self._by_id.get(meter_id)

    def moved(self, meter_id: str, host: str) -> None:
        """The meter calls from `host` now (its row says so too): known there from now on."""
        known = self._by_id.get(meter_id)
        if known is None or known.host == host:
            return
        self._by_id[meter_id] = replace(known, host=host)
        if known.host:
            others = [m for m in self._by_host.get(known.host, []) if m != meter_id]
            if others:
                self._by_host[known.host] = others
            else:
                self._by_host.pop(known.host, None)
        self._by_host.setdefault(host, []).append(meter_id)

    def system_title_of(self, meter_id: str) -> bytes | None:
        return self._titles.get(meter_id)

    def by_name(self, name: str) -> KnownMeter | None:
        """The logical device name or serial number the meter says it has: the meter id
        is the serial number (DESIGN.md, inventory file), and an IDIS logical device name
        ends with it (a three-letter maker code in front)."""
        known = self._by_id.get(name)
        if known is None and len(name) > 3:
            known = self._by_id.get(name[3:])
        return known

    def by_address(self, host: str, physical: int | None = None) -> KnownMeter | None:
        """The one meter known at this host (and HDLC physical address, when several share a
        terminal server); None when none or several fit."""
        candidates = [self._by_id[m] for m in self._by_host.get(host, ())]
        if physical is not None and len(candidates) > 1:
            candidates = [k for k in candidates if k.server_physical == physical]
        return candidates[0] if len(candidates) == 1 else None
