"""Rooms on the network: what mDNS and heartbeats list, which one ``/join NAME`` means, and
this node's own announcements.

A listing is a hint from whoever announced it, never authority: joining asks the listed host,
whose signed state decides (``meshchat.admission``). A name that two hosts list is ambiguous
and is never picked silently.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass

from .. import admission
from ..clock import Clock
from ..config import Limits, Timings
from ..discovery.base import Discovery, RoomAnnouncement
from ..discovery.mdns import MdnsDiscovery
from ..discovery.static import CombinedDiscovery, StaticDiscovery
from ..errors import AmbiguousName, RoomNotFound
from ..events import RoomInfo
from ..identity import Identity, fingerprint_of
from ..protocol.messages import HostedRoom, PeerCard, RoomState
from .local import LocalPeer

__all__ = ["Directory", "Listing", "make_discovery"]


def make_discovery(addresses: Sequence[str], identity: Identity, static_peers: Sequence[str],
                   *, mdns: bool, listen_only: bool) -> Discovery:
    """mDNS (unless ``mdns`` is off) plus the ``--peer`` addresses, as one discovery."""
    parts: list[Discovery] = []
    if mdns:
        parts.append(MdnsDiscovery(list(addresses), announce=not listen_only))
    if static_peers:
        parts.append(StaticDiscovery(static_peers, identity))
    return CombinedDiscovery(*parts)


@dataclass(slots=True)
class Listing:
    room_id: bytes
    name: str
    host: PeerCard
    members: int
    locked: bool
    has_password: bool
    term: int
    source: str  # 'mdns', 'heartbeat', or how a join flow made it ('merge', 'moved', ...)


class Directory:
    """Listings by (room id, host). ``on_host_card(card)``: a listing named a host we may not
    know yet; ``on_rival(room, host)``: a heartbeat lists a room, maybe one we host too."""

    def __init__(self, me: LocalPeer, discovery: Discovery, clock: Clock, timings: Timings, *,
                 on_host_card: Callable[[PeerCard], None],
                 on_rival: Callable[[HostedRoom, bytes], None],
                 limits: Limits | None = None, stats: Counter[str] | None = None) -> None:
        self._me = me
        self._limits = limits or Limits()
        self._stats = stats if stats is not None else Counter()
        self._discovery = discovery
        self._clock = clock
        self._timings = timings
        self._on_host_card = on_host_card
        self._on_rival = on_rival
        self.listings: dict[tuple[bytes, bytes], Listing] = {}
        self._changed = asyncio.Event()

    # ---------------------------------------------------------------- what others list

    def _room_for(self, key: tuple[bytes, bytes]) -> bool:
        """Whether a listing under ``key`` may be kept: one already there, or a new one within
        ``Limits.max_rooms_per_peer`` for its host and ``max_listings`` in all (else counted)."""
        if key in self.listings:
            return True
        limits = self._limits
        if len(self.listings) >= limits.max_listings:
            self._stats["dropped_listings_full"] += 1
            return False
        if sum(1 for k in self.listings if k[1] == key[1]) >= limits.max_rooms_per_peer:
            self._stats["dropped_listings_per_peer"] += 1
            return False
        return True

    def discovered_room(self, room: RoomAnnouncement) -> None:
        if room.host.peer_id == self._me.peer_id:
            return
        if not self._room_for((room.room_id, room.host.peer_id)):
            return
        self.listings[(room.room_id, room.host.peer_id)] = Listing(
            room.room_id, room.name, room.host, room.members, room.locked, room.has_password,
            room.term, "mdns",
        )
        self._on_host_card(room.host)
        self._changed.set()

    def discovered_room_removed(self, room_id: bytes, host: bytes) -> None:
        listing = self.listings.get((room_id, host))
        if listing is not None and listing.source == "mdns":
            del self.listings[(room_id, host)]

    def from_heartbeat(self, peer: bytes, card: PeerCard | None,
                       hosted: Iterable[HostedRoom]) -> None:
        """``peer``'s heartbeat lists ``hosted``: its other heartbeat listings are gone."""
        seen: set[bytes] = set()
        changed = False
        for room in hosted:
            seen.add(room.room_id)
            if card is None:
                continue
            key = (room.room_id, peer)
            if not self._room_for(key):
                continue
            listing = Listing(room.room_id, room.name, card, room.members, room.locked,
                              room.has_password, room.term, "heartbeat")
            if self.listings.get(key) != listing:
                self.listings[key] = listing
                changed = True
            self._on_rival(room, peer)
        for key in [k for k, v in self.listings.items()
                    if k[1] == peer and k[0] not in seen and v.source == "heartbeat"]:
            del self.listings[key]
            changed = True
        if changed:
            self._changed.set()

    def forget_host(self, peer: bytes) -> None:
        for key in [k for k in self.listings if k[1] == peer]:
            del self.listings[key]

    async def find(self, name: str, wait_s: float) -> Listing:
        """The listing ``/join name`` means (``admission.choose``), waiting up to ``wait_s``
        for one: a name that two hosts announce raises ``AmbiguousName`` (pick one with
        ``name#<fingerprint prefix>``)."""
        deadline = self._clock.monotonic() + wait_s
        settle: float | None = None
        while True:
            listings = list(self.listings.values())
            picked = admission.choose(name, [
                admission.Offer(lst.name, lst.room_id, lst.host.peer_id, lst.term, lst.members)
                for lst in listings])
            now = self._clock.monotonic()
            if isinstance(picked, int):
                return listings[picked]
            if isinstance(picked, admission.Ambiguous):
                if not picked.transient:
                    raise AmbiguousName(name, picked.candidates)
                # Two hosts list one room id: a handoff lists it at both until the old host's
                # next heartbeat (or mDNS goodbye). Give it that long, then ask the user.
                if settle is None:
                    settle = now + 3 * self._timings.heartbeat_interval_s
                if now >= settle:
                    raise AmbiguousName(name, picked.candidates)
                wait_until = settle
            else:
                settle = None
                if now >= deadline:
                    raise RoomNotFound(f"no room called {name!r} on the network (see /rooms)")
                wait_until = deadline
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), wait_until - now)

    def infos(self, hosted: Iterable[RoomState], joined: Container[bytes]) -> list[RoomInfo]:
        """Rooms on the network by name: ``hosted`` (ours, announced) first, then listings;
        of one room id the listing with the highest term, unless we are in it."""
        me = self._me
        best: dict[bytes, RoomInfo] = {}
        for s in hosted:
            best[s.room_id] = RoomInfo(s.name, me.name, len(s.members), s.locked,
                                       s.password is not None, s.room_id, me.fingerprint)
        for lst in sorted(self.listings.values(), key=lambda item: item.term):
            if lst.room_id in best and lst.room_id in joined:
                continue
            best[lst.room_id] = RoomInfo(lst.name, lst.host.name, lst.members, lst.locked,
                                         lst.has_password, lst.room_id,
                                         fingerprint_of(lst.host.peer_id))
        return sorted(best.values(), key=lambda r: r.name.casefold())

    # ---------------------------------------------------------------- what we announce

    async def announce(self, s: RoomState) -> None:
        with contextlib.suppress(Exception):
            await self._discovery.announce_room(RoomAnnouncement(
                s.room_id, s.name, self._me.card(), len(s.members), s.locked,
                s.password is not None, s.term,
            ))

    async def withdraw(self, room_id: bytes) -> None:
        with contextlib.suppress(Exception):
            await self._discovery.withdraw_room(room_id)
