"""Issue 10: honest faults of every shape heal into one room with one host.

Real ``meshchat start`` processes, one per namespace, fast timers (``peer_expired_s`` 1 s).
A cut between switches (``Lab.split``: every host keeps its own cable, the trunk between the
switches goes) of lengths from 0.5 s to twice ``peer_expired_s``, with the host on either
side; three-way splits healed in both orders; a host frozen (SIGSTOP) past the host timeout.
After each heal every member must name the same host and all four members, what each side
said during a cut must reach everyone, and so must a line said afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from .conftest import LabFactory
from .helpers import FAST, ROOM, Chat, lit, open_room, wait_same

NAMES = ["alice", "bob", "carol", "dave"]
# Convergence after a heal: the 2 s, plus one round of /info probes (each member
# answers in turn) that measures it.
HEAL_S = 2.0 + 1.0


def _one_room(everyone: Sequence[Chat], what: str) -> str:
    host, _members = wait_same(everyone, what, lambda c: c.room_view(),
                              until=lambda view: len(view[1]) == len(everyone), timeout=HEAL_S)
    return str(host)


def _line_reaches_all(sender: Chat, everyone: Sequence[Chat], text: str) -> None:
    sender.say(text)
    for chat in everyone:
        if chat is not sender:
            chat.wait_texts([text], timeout=5)


def test_a_cut_between_switches_of_any_length_heals_into_one_room(
        lab_factory: LabFactory) -> None:
    lab = lab_factory(4)
    everyone = open_room(lab.hosts, NAMES)
    h = lab.hosts
    expired = FAST.peer_expired_s
    lengths = [0.5 + i * (2 * expired - 0.5) / 19 for i in range(20)]  # 0.5 s … 2 × expired
    # Vary who is cut off from whom: the host with its first member, the host with the last.
    shapes = [([h[0], h[1]], [h[2], h[3]]), ([h[0], h[3]], [h[1], h[2]]),
              ([h[0], h[2]], [h[1], h[3]])]
    healed_in: list[float] = []
    hosts: list[str] = []
    for run, length in enumerate(lengths):
        shape = shapes[run % len(shapes)]
        lab.split(*shape)
        started = time.monotonic()
        # One member on each side speaks during the cut: nothing said is lost by the heal.
        during = []
        for side in shape:
            speaker = everyone[h.index(side[-1])]
            text = f"during-cut-{run}-{speaker.name}"
            speaker.say(text)
            during.append(text)
        time.sleep(max(0.0, length - (time.monotonic() - started)))  # the fault's length
        lab.heal()
        t0 = time.monotonic()
        hosts.append(_one_room(everyone, f"the room after a {length:.2f} s cut (run {run})"))
        healed_in.append(time.monotonic() - t0)
        try:
            for chat in everyone:
                chat.wait_texts(during, timeout=5)
        except Exception:
            for chat in everyone:
                print(chat.name, chat.lines[-14:])
            raise
        speaker = everyone[run % len(everyone)]
        _line_reaches_all(speaker, everyone, f"after-cut-{run}")
    print("heal → one room (s):", ", ".join(f"{t:.2f}" for t in healed_in), "hosts:", hosts)


def test_a_three_way_split_heals_in_either_order(lab_factory: LabFactory) -> None:
    lab = lab_factory(4)
    everyone = open_room(lab.hosts, NAMES)
    h = lab.hosts
    groups = ([h[0]], [h[1], h[2]], [h[3]])
    for run, (length, first_heal) in enumerate([(0.6, 1), (1.5, 2), (2.2, 1), (0.9, 2)]):
        lab.split(*groups)
        time.sleep(length)
        # Heal one trunk first (group 0 with group first_heal), the other a moment later.
        other = 3 - first_heal
        lab.split([*groups[0], *groups[first_heal]], groups[other])
        time.sleep(0.3)
        lab.heal()
        _one_room(everyone, f"the room after a three-way split (run {run})")
        _line_reaches_all(everyone[run % 4], everyone, f"after-split-{run}")


def test_a_host_frozen_past_the_timeout_rejoins_and_is_heard(lab_factory: LabFactory) -> None:
    lab = lab_factory(4)
    everyone = open_room(lab.hosts, NAMES)
    told = (rf"^\* (the network healed: {lit(ROOM)} merged into the room hosted by \S+"
            rf"|you were out of {lit(ROOM)} while \S+ took over as host: rejoining"
            rf"|\S+ is now the host of {lit(ROOM)} \(was you\))$")
    for run in range(10):
        host = next(c for c in everyone if c.room_view()[0] == c.name)
        others = [c for c in everyone if c is not host]
        mark, seen_from = host.mark(), others[0].mark()
        host.stop()
        # Past the host timeout (0.3 s + 0.15 s ping), below and above peer_expired_s (1 s).
        length = 0.6 + 0.16 * run
        others[0].wait_line(rf"^\* ({lit(host.name)} left {lit(ROOM)} \(vanished\)|"
                            rf"you are now the host of {lit(ROOM)} \(was {lit(host.name)}\)|"
                            rf"\S+ is now the host of {lit(ROOM)} \(was {lit(host.name)}\))$",
                            timeout=10, since=seen_from)
        time.sleep(length)
        host.cont()
        new_host = _one_room(everyone, f"the room after {host.name} woke (run {run})")
        assert new_host != host.name, "the frozen host kept the room"
        host.wait_line(told, timeout=5, since=mark)  # the woken host's user saw the change
        _line_reaches_all(host, everyone, f"after-wake-{run}")
