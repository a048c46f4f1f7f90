"""Which peers the node connects to, which cards it only keeps in mind, whom it denies. Pure.

A card reaches a node in four ways: the peer's own Hello (over a channel CURVE authenticated
as that peer's key), its heartbeat (on our SUB, from the key ZAP authenticated for it), an
introduction by another peer (``Peers``, ``Heartbeat.known``) and discovery (mDNS, ``--peer``).
The first two are proof that the key holder is there. The others are claims anyone on the LAN
can make, with any id and any address, as many as they like.

So a card from an introduction or from discovery makes a **candidate**, not a peer:

- candidates are bounded (``Limits.max_candidates``, ``max_candidates_per_introducer``; our
  own discovery, which finds a whole LAN at once and never offers a card twice, may fill its
  share of the table, ``max_discovered_candidates``, and probe ``max_discovered_probes`` at
  once). Discovery and introductions each have a share (``max_introduced_candidates``,
  ``max_introduced_probes`` for all introducers together) that leaves room for the other:
  anyone on the LAN can send mDNS records, and a flood of them never crowds out the cards
  that admitted peers introduce, nor the reverse;
  an introducer hands us at most ``introduced_cards_burst`` new cards at once, refilled at
  ``introduced_cards_per_s`` (the rest are ignored unread: even checking that a card's id is
  an Ed25519 key costs 100 µs);
- at most ``max_probes`` candidates (``max_probes_per_introducer`` from one introducer) are
  *probed* at once: one DEALER opened to the address on the card and a Hello sent. A real peer
  answers within milliseconds (its Hello, or the Peers that answer ours), which proves it, and
  only then is it admitted (SUB + DEALER, ``Limits.max_peers`` at most). A probe that gets no
  answer within ``probe_timeout_s``, or whose handshake fails, is closed and forgotten (a card
  from our own discovery is probed again later, doubling, ``DISCOVERY_TRIES`` times);
- so N fake cards cost at most ``max_probes`` sockets, whatever N, and never a write to disk.

Peers and candidates are keyed by ``identity.canonical_id`` (the CURVE key): a twin id (the
same key, the sign bit flipped) of a peer or candidate, or of any peer admitted before in
this run, is refused (``dropped_twin``), so a twin can never replace a known peer.

``BanList`` turns the bans of the rooms we hold into ``Transport.deny``/``allow`` calls.

Methods take ``now`` (monotonic seconds) and return effects (``Probe``, ``Unprobe``) that the
node carries out; drops are counted in the ``stats`` counter the node passes in.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .config import Limits
from .identity import canonical_id
from .protocol.messages import PeerCard
from .ratelimit import TokenBuckets

__all__ = ["Admission", "BanList", "PeerTable", "Probe", "Unprobe"]

DISCOVERY = b"discovery"  # the "introducer" of cards that mDNS or --peer found
DISCOVERY_TRIES = 6  # probes of a discovered card (2, 4, … 64 s apart) before it is dropped


@dataclass(frozen=True, slots=True)
class Probe:
    """Open only a DEALER to the candidate's card and say Hello: its answer proves it."""

    card: PeerCard


@dataclass(frozen=True, slots=True)
class Unprobe:
    """Close the DEALER of a probe that expired or failed."""

    peer_id: bytes


PeerEffect = Probe | Unprobe


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer to "may this proven peer in?": ``refusal`` names why not (a stats key
    suffix); ``probed`` says our Hello already went to it; ``effects`` are to be run."""

    refusal: str | None
    probed: bool = False
    effects: tuple[PeerEffect, ...] = ()


@dataclass(slots=True)
class _Candidate:
    card: PeerCard
    canon: bytes
    introducer: bytes
    since: float
    probing_since: float | None = None
    tries: int = 0  # probes that got no answer (discovery's cards are tried again)
    retry_at: float = 0.0  # not probed again before this


@dataclass(slots=True)
class _Introducer:
    waiting: int = 0  # candidates it introduced (probing or not)
    probing: int = 0


class PeerTable:
    """Admitted peers and candidates, by canonical id (see the module docstring)."""

    def __init__(self, limits: Limits, me: bytes, stats: Counter[str] | None = None) -> None:
        self._limits = limits
        self._me = me
        self.stats: Counter[str] = stats if stats is not None else Counter()
        self._admitted: dict[bytes, bytes] = {}  # canonical id -> peer id
        self._canon_of: dict[bytes, bytes] = {}  # peer id -> canonical id, peers + candidates
        self._first_ids: OrderedDict[bytes, bytes] = OrderedDict()  # ever admitted, bounded
        self._candidates: OrderedDict[bytes, _Candidate] = OrderedDict()  # by canonical id
        self._introducers: dict[bytes, _Introducer] = {}
        self._buckets: TokenBuckets[bytes] = TokenBuckets(limits.max_rate_entries)
        self._probing = 0
        self.bans = BanList(me)

    # ------------------------------------------------------------ queries

    def __len__(self) -> int:
        return len(self._admitted)

    @property
    def probing(self) -> int:
        return self._probing

    def candidates(self, discovered: bool | None = None) -> int:
        """Candidates waiting or probed: all, or only those from our discovery (True) or
        from introducers (False)."""
        return len(self._candidates) if discovered is None else self._waiting(discovered)

    def probing_from(self, discovered: bool) -> int:
        """Probes open to cards from our discovery (True) or from introducers (False)."""
        found = self._introducers.get(DISCOVERY)
        probing = found.probing if found is not None else 0
        return probing if discovered else self._probing - probing

    def is_candidate(self, peer_id: bytes) -> bool:
        canon = self._canon_of.get(peer_id)
        return canon is not None and canon not in self._admitted

    def sync_bans(self, banned: Iterable[bytes]) -> tuple[list[bytes], list[bytes]]:
        """The ids banned by the rooms we hold now -> (ids to deny, ids to allow again)."""
        return self.bans.update(banned)

    def candidate_card(self, peer_id: bytes) -> PeerCard | None:
        canon = self._canon_of.get(peer_id)
        candidate = self._candidates.get(canon) if canon is not None else None
        return candidate.card if candidate is not None else None

    # ------------------------------------------------------------ proven peers

    def admit(self, peer_id: bytes, now: float) -> Admission:
        """A peer proved it holds its key (its Hello, its heartbeat): may it be a peer?"""
        canon = self._canon_of.get(peer_id)
        if canon is not None and self._admitted.get(canon) == peer_id:
            return Admission(None)
        if canon is None:
            try:
                canon = canonical_id(peer_id)
            except ValueError:
                return Admission("invalid_peer")
        if canon in self.bans.denied:
            return Admission("banned")
        if self._admitted.get(canon, peer_id) != peer_id or (
                self._first_ids.get(canon, peer_id) != peer_id):
            return Admission("twin")
        if len(self._admitted) >= self._limits.max_peers:
            # No room for it: a probe of it would only hold an fd until it expired.
            waiting = self._candidates.get(canon)
            closed = self._forget_candidate(waiting, close=True) if waiting is not None else []
            return Admission("too_many_peers", False, tuple(closed))
        effects: list[PeerEffect] = []
        probed = False
        candidate = self._candidates.get(canon)
        if candidate is not None:
            if candidate.card.peer_id == peer_id:
                probed = candidate.probing_since is not None
                self._forget_candidate(candidate, close=False)
            else:  # a twin waiting as a candidate: the proven id wins
                effects += self._forget_candidate(candidate, close=True)
        self._admitted[canon] = peer_id
        self._canon_of[peer_id] = canon
        self._first_ids[canon] = peer_id
        self._first_ids.move_to_end(canon)
        while len(self._first_ids) > self._limits.max_known_peers:
            self._first_ids.popitem(last=False)
        effects += self._schedule(now)
        return Admission(None, probed, tuple(effects))

    def remove(self, peer_id: bytes, now: float) -> list[PeerEffect]:
        """An admitted peer is gone (or a candidate withdrawn by discovery)."""
        canon = self._canon_of.get(peer_id)
        if canon is None:
            return []
        if self._admitted.get(canon) == peer_id:
            del self._admitted[canon]
            del self._canon_of[peer_id]
            return []
        candidate = self._candidates.get(canon)
        if candidate is None or candidate.card.peer_id != peer_id:
            return []
        return [*self._forget_candidate(candidate, close=True), *self._schedule(now)]

    # ------------------------------------------------------------ candidates

    def offer(self, cards: Sequence[PeerCard], introducer: bytes, now: float
              ) -> list[PeerEffect]:
        """Cards someone else vouches for (``DISCOVERY`` for mDNS and ``--peer``)."""
        limits = self._limits
        rate, burst = limits.introduced_cards_per_s, limits.introduced_cards_burst
        for card in cards[: limits.max_collection_items]:
            pid = card.peer_id
            if pid == self._me or pid in self._canon_of:
                continue  # ourselves, a peer, or a candidate already: nothing to do
            if not card.addresses:
                self.stats["dropped_card_no_address"] += 1
                continue
            if introducer != DISCOVERY and not self._buckets.take(introducer, rate, burst, now):
                # (our own discovery is bounded by the table itself: a LAN found at once)
                self.stats["dropped_introduction_rate"] += 1
                continue
            if len(self._candidates) >= limits.max_candidates:
                self.stats["dropped_too_many_candidates"] += 1
                continue
            try:
                canon = canonical_id(pid)
            except ValueError:
                self.stats["dropped_invalid_peer"] += 1
                continue
            if canon in self.bans.denied:
                self.stats["dropped_banned"] += 1
                continue
            if canon in self._admitted or canon in self._candidates or (
                    self._first_ids.get(canon, pid) != pid):
                self.stats["dropped_twin"] += 1
                continue
            who = self._introducers.setdefault(introducer, _Introducer())
            if (len(self._candidates) >= limits.max_candidates
                    or who.waiting >= self._per_introducer(introducer)
                    or self._waiting(introducer == DISCOVERY) >= self._share(introducer)):
                self.stats["dropped_too_many_candidates"] += 1
                if who.waiting == 0:
                    del self._introducers[introducer]
                continue
            who.waiting += 1
            self._candidates[canon] = _Candidate(card, canon, introducer, now)
            self._canon_of[pid] = canon
        return self._schedule(now)

    def failed(self, peer_id: bytes, now: float) -> list[PeerEffect] | None:
        """The probe's handshake failed (a wrong key at that address): drop the candidate.
        None if ``peer_id`` is no candidate (the node handles a peer's failure itself)."""
        if not self.is_candidate(peer_id):
            return None
        canon = self._canon_of[peer_id]
        self.stats["candidates_failed"] += 1
        return [*self._forget_candidate(self._candidates[canon], close=True),
                *self._schedule(now)]

    def tick(self, now: float) -> list[PeerEffect]:
        """Close probes that got no answer in time, and start the next ones."""
        deadline = now - self._limits.probe_timeout_s
        effects: list[PeerEffect] = []
        for candidate in [c for c in self._candidates.values()
                          if c.probing_since is not None and c.probing_since <= deadline]:
            self.stats["candidates_expired"] += 1
            candidate.tries += 1
            if candidate.introducer != DISCOVERY or candidate.tries >= DISCOVERY_TRIES:
                effects += self._forget_candidate(candidate, close=True)
                continue
            # A card our own discovery found is not heard of again (mDNS reports a service
            # once): a node that was slow to answer (a LAN of many starting at once) is
            # probed again later, doubling, rather than lost for good.
            effects += self._stop_probe(candidate)
            candidate.retry_at = now + self._limits.probe_timeout_s * 2 ** candidate.tries
        return effects + self._schedule(now)

    # ------------------------------------------------------------ internals

    def _schedule(self, now: float) -> list[PeerEffect]:
        """Probe waiting candidates, oldest first, within the total and per-introducer caps."""
        limits = self._limits
        if self._probing >= limits.max_probes:
            return []
        effects: list[PeerEffect] = []
        for candidate in self._candidates.values():
            if self._probing >= limits.max_probes:
                break
            if candidate.probing_since is not None or candidate.retry_at > now:
                continue
            who = self._introducers[candidate.introducer]
            discovered = candidate.introducer == DISCOVERY
            if who.probing >= self._probes_per_introducer(candidate.introducer):
                continue
            if not discovered and self.probing_from(False) >= limits.max_introduced_probes:
                continue
            candidate.probing_since = now
            who.probing += 1
            self._probing += 1
            effects.append(Probe(candidate.card))
        return effects

    def _per_introducer(self, introducer: bytes) -> int:
        """Candidates one introducer may have waiting. Our own discovery is the LAN itself:
        at a start every peer on it is found at once, and a card it drops is not offered
        again, so it may fill its whole share (``max_discovered_candidates``)."""
        if introducer == DISCOVERY:
            return self._limits.max_discovered_candidates
        return self._limits.max_candidates_per_introducer

    def _share(self, introducer: bytes) -> int:
        """Candidates all sources of this kind (discovery, or introducers) may have waiting."""
        if introducer == DISCOVERY:
            return self._limits.max_discovered_candidates
        return self._limits.max_introduced_candidates

    def _waiting(self, discovered: bool) -> int:
        found = self._introducers.get(DISCOVERY)
        waiting = found.waiting if found is not None else 0
        return waiting if discovered else len(self._candidates) - waiting

    def _probes_per_introducer(self, introducer: bytes) -> int:
        if introducer == DISCOVERY:
            return self._limits.max_discovered_probes
        return self._limits.max_probes_per_introducer

    def _stop_probe(self, candidate: _Candidate) -> list[PeerEffect]:
        """Close a candidate's probe and keep the candidate, to probe later."""
        if candidate.probing_since is None:
            return []
        candidate.probing_since = None
        self._introducers[candidate.introducer].probing -= 1
        self._probing -= 1
        return [Unprobe(candidate.card.peer_id)]

    def _forget_candidate(self, candidate: _Candidate, close: bool) -> list[PeerEffect]:
        del self._candidates[candidate.canon]
        self._canon_of.pop(candidate.card.peer_id, None)
        closed = self._stop_probe(candidate)
        effects = closed if close else []
        who = self._introducers[candidate.introducer]
        who.waiting -= 1
        if who.waiting == 0:
            del self._introducers[candidate.introducer]
        return effects


@dataclass(slots=True)
class BanList:
    """The keys our transport denies: exactly those banned by a room we hold.

    ``update`` takes the banned ids of every room we hold now and returns which ids to deny
    and which to allow again (a key banned by two rooms stays denied until both lift it)."""

    me: bytes
    denied: dict[bytes, bytes] = field(default_factory=dict)  # canonical id -> a banned id
    parked: dict[bytes, PeerCard] = field(default_factory=dict)  # cards of denied peers

    def park(self, card: PeerCard) -> None:
        """Keep a denied peer's card, to reach it again if it is allowed back."""
        try:
            canon = canonical_id(card.peer_id)
        except ValueError:
            return
        if canon in self.denied:
            self.parked[canon] = card

    def unpark(self, peer_id: bytes) -> PeerCard | None:
        try:
            return self.parked.pop(canonical_id(peer_id), None)
        except ValueError:
            return None

    def update(self, banned: Iterable[bytes]) -> tuple[list[bytes], list[bytes]]:
        wanted: dict[bytes, bytes] = {}
        mine = canonical_id(self.me)
        for peer_id in banned:
            try:
                canon = canonical_id(peer_id)
            except ValueError:
                continue  # not a key: nothing the transport could be asked to refuse
            if canon != mine:
                wanted.setdefault(canon, peer_id)
        deny = [pid for canon, pid in wanted.items() if canon not in self.denied]
        allow = [pid for canon, pid in self.denied.items() if canon not in wanted]
        self.denied = {canon: self.denied.get(canon, pid) for canon, pid in wanted.items()}
        for canon in [c for c in self.parked if c not in self.denied]:
            if self.parked[canon].peer_id not in allow:
                del self.parked[canon]
        return deny, allow

    def is_denied(self, peer_id: bytes) -> bool:
        try:
            return canonical_id(peer_id) in self.denied
        except ValueError:
            return False
