"""Hypothesis stateful test of the room rules across a simulated LAN.

Nodes apply exactly the pure rules the real node applies (``accepts``, ``successor``,
``claim``, ``host_priority``, merges); the machine makes random joins, leaves, crashes,
partitions and heals. After the timeouts (``settle``): exactly one host per connected group
that holds the room, and every member of a group holds the same state.
"""

from __future__ import annotations

import os

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from meshchat.identity import Identity
from meshchat.protocol.codec import Codec
from meshchat.room import LEFT, VANISHED, RoomCore, host_priority, is_member, successor

CODEC = Codec()
N = 5
# Fixed identities: runs are reproducible; Hypothesis picks their order (which decides ranks).
POOL = [Identity(bytes([i + 1]) * 32) for i in range(N)]
IDS = list(POOL)


class Lan(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.cores: list[RoomCore | None] = [None] * N
        self.alive = [True] * N
        self.group = [0] * N
        core, _, _ = RoomCore.create(IDS[0], CODEC, "lobby", "n0", 0.0, os.urandom)
        self.cores[0] = core
        self.keys = 1

    @initialize(order=st.permutations(range(N)))
    def pick_identities(self, order: list[int]) -> None:
        IDS[:] = [POOL[k] for k in order]
        core, _, _ = RoomCore.create(IDS[0], CODEC, "lobby", "n0", 0.0, os.urandom)
        self.cores = [core] + [None] * (N - 1)

    # ------------------------------------------------------------ helpers

    def reach(self, a: int, b: int) -> bool:
        return self.alive[a] and self.alive[b] and self.group[a] == self.group[b]

    def index(self, peer: bytes) -> int:
        return next(i for i, x in enumerate(IDS) if x.peer_id == peer)

    def epoch(self) -> int:
        self.keys += 1
        return self.keys

    def spread(self, src: int) -> None:
        """What heartbeats, StateAnnounce and StatePush do: the state reaches the group."""
        core = self.cores[src]
        assert core is not None
        for j in range(N):
            other = self.cores[j]
            if j != src and other is not None and self.reach(src, j):
                host_silent = not self.reach(j, self.index(other.state.host))
                other.offer(core.blob, host_silent)

    def settle(self) -> None:
        for _ in range(4 * N):
            changed = False
            for i in range(N):
                core = self.cores[i]
                if core is None or not self.alive[i]:
                    continue
                state = core.state
                host = self.index(state.host)
                if core.is_host:
                    for m in state.members:
                        j = self.index(m.peer_id)
                        if j != i and (not self.reach(i, j) or self.cores[j] is None):
                            core.remove_member(m.peer_id, VANISHED, new_epoch=self.epoch())
                            changed = True
                    # partition heal: the lower-priority host merges into the other
                    for j in range(N):
                        other = self.cores[j]
                        if (j != i and other is not None and other.is_host and self.reach(i, j)
                                and host_priority(other.state) > host_priority(core.state)):
                            for m in core.state.members:
                                k = self.index(m.peer_id)
                                if self.reach(j, k) and self.cores[k] is not None:
                                    other.add_member(m.peer_id, f"n{k}", 1.0)
                            for m in other.state.members:
                                k = self.index(m.peer_id)
                                target = self.cores[k]
                                if k != j and target is not None and self.reach(j, k):
                                    target.current = other.current
                            changed = True
                            break
                elif not self.reach(i, host):
                    nxt = successor(state, lambda p, i=i: self.reach(i, self.index(p))
                                    and self.cores[self.index(p)] is not None)
                    if nxt == IDS[i].peer_id:
                        core.claim(state.host, self.epoch())
                        changed = True
                before = {j: (c.state.term, c.state.version) for j, c in enumerate(self.cores)
                          if c is not None}
                self.spread(i)
                after = {j: (c.state.term, c.state.version) for j, c in enumerate(self.cores)
                         if c is not None}
                changed = changed or before != after
            # a node no longer in its own state has been removed: it drops the room
            for i in range(N):
                core = self.cores[i]
                if core is not None and not is_member(core.state, IDS[i].peer_id):
                    self.cores[i] = None
                    changed = True
            if not changed:
                return

    # ------------------------------------------------------------ rules

    @rule(i=st.integers(0, N - 1))
    def join(self, i: int) -> None:
        if self.cores[i] is not None or not self.alive[i]:
            return
        for j in range(N):
            host = self.cores[j]
            if host is not None and host.is_host and self.reach(i, j):
                host.add_member(IDS[i].peer_id, f"n{i}", 1.0)
                self.cores[i] = RoomCore(IDS[i], CODEC, host.current)
                self.spread(j)
                return

    @rule(i=st.integers(0, N - 1))
    def leave(self, i: int) -> None:
        core = self.cores[i]
        if core is None:
            return
        if core.is_host:
            nxt = successor(core.state, lambda p: self.reach(i, self.index(p)))
            if nxt is not None:
                core.handoff(nxt, leaving=True)
                self.spread(i)
        else:
            host = self.index(core.state.host)
            host_core = self.cores[host]
            if self.reach(i, host) and host_core is not None and host_core.is_host:
                host_core.remove_member(IDS[i].peer_id, LEFT, new_epoch=self.epoch())
                self.spread(host)
        self.cores[i] = None

    @rule(i=st.integers(0, N - 1))
    def crash(self, i: int) -> None:
        if sum(self.alive) > 1:
            self.alive[i] = False
            self.cores[i] = None

    @rule(i=st.integers(0, N - 1))
    def restart(self, i: int) -> None:
        self.alive[i] = True

    @rule(split=st.lists(st.booleans(), min_size=N, max_size=N))
    def partition(self, split: list[bool]) -> None:
        self.group = [1 if s else 0 for s in split]

    @rule()
    def heal(self) -> None:
        self.group = [0] * N

    @precondition(lambda self: all(c is None for c in self.cores))
    @rule(i=st.integers(0, N - 1))
    def recreate(self, i: int) -> None:
        if self.alive[i]:
            core, _, _ = RoomCore.create(IDS[i], CODEC, "lobby", f"n{i}", 0.0, os.urandom)
            self.cores[i] = core

    # ------------------------------------------------------------ what must hold

    @invariant()
    def one_host_per_group_after_timeouts(self) -> None:
        self.settle()
        groups: dict[int, list[int]] = {}
        for i in range(N):
            if self.cores[i] is not None and self.alive[i]:
                groups.setdefault(self.group[i], []).append(i)
        for members in groups.values():
            # nodes holding the room in one group, split by room lineage (room id)
            by_room: dict[bytes, list[int]] = {}
            for i in members:
                core = self.cores[i]
                assert core is not None
                by_room.setdefault(core.state.room_id, []).append(i)
            for holders in by_room.values():
                hosts = {self.cores[i].state.host for i in holders}  # type: ignore[union-attr]
                assert len(hosts) == 1, f"{len(hosts)} hosts in one group"
                versions = {(self.cores[i].state.term, self.cores[i].state.version)  # type: ignore[union-attr]
                            for i in holders}
                assert len(versions) == 1, f"diverging states {versions}"
                host = self.index(hosts.pop())
                assert host in holders, "the host of a group holds the room"
                state = self.cores[host].state  # type: ignore[union-attr]
                assert sorted(self.index(m.peer_id) for m in state.members) == sorted(holders)


Lan.TestCase.settings = settings(max_examples=120, stateful_step_count=25, deadline=None)
TestLan = Lan.TestCase
