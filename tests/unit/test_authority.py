"""The authority table: one row per wire type, the same in docs/protocol.md, and the gate."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from meshchat.authority import TABLE, Gate, Role, check, rate_group
from meshchat.config import Limits
from meshchat.protocol.messages import (
    ALL_TYPES,
    Chat,
    Heads,
    HistoryReply,
    KeyUpdate,
    Ping,
    Pong,
    Sealed,
    StateAnnounce,
    StatePush,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def test_every_wire_type_has_exactly_one_row() -> None:
    assert set(TABLE) == set(ALL_TYPES)


def test_the_documented_table_is_the_enforced_one() -> None:
    text = DOC.read_text()
    rows = dict(re.findall(r"^\|\s*`(\w+)`\s*\|[^|]*\|\s*([^|]+?)\s*\|", text, re.M))
    for cls, rule in TABLE.items():
        assert cls.TYPE in rows, f"docs/protocol.md has no row for {cls.TYPE}"
        assert rows[cls.TYPE] == rule.who, f"{cls.TYPE}: doc says {rows[cls.TYPE]!r}"


def test_wrong_sender_is_refused_with_a_reason() -> None:
    anyone = Role.ANYONE
    assert check(KeyUpdate(b"r" * 16, 1, b""), "direct", anyone | Role.MEMBER).reason == \
        "not_host"  # type: ignore[union-attr]
    assert check(Pong(1), "direct", anyone).reason == "unsolicited"  # type: ignore[union-attr]
    assert check(HistoryReply(b"r" * 16, (), ()), "direct",
                 anyone | Role.MEMBER).reason == "unsolicited"  # type: ignore[union-attr]
    assert check(Sealed(b"r" * 16, 1, b""), "room", anyone).reason == \
        "not_member"  # type: ignore[union-attr]
    assert check(Chat(b""), "inner", anyone | Role.FORMER).reason == \
        "not_member"  # type: ignore[union-attr]
    assert check(StatePush(b"r" * 16, b""), "direct", anyone | Role.MEMBER) is not None


def test_right_sender_passes() -> None:
    a = Role.ANYONE
    assert check(Ping(1), "direct", a) is None
    assert check(Pong(1), "direct", a | Role.ASKED) is None
    assert check(KeyUpdate(b"r" * 16, 1, b""), "direct", a | Role.MEMBER | Role.HOST) is None
    assert check(StateAnnounce(b""), "inner", a | Role.MEMBER) is None
    assert check(Heads((), 1, 1), "inner", a | Role.MEMBER) is None
    assert check(StatePush(b"r" * 16, b""), "direct", a | Role.ASKED) is None


def test_a_type_on_the_wrong_socket_is_refused() -> None:
    assert check(Ping(1), "presence", Role.ANYONE).reason == \
        "wrong_socket"  # type: ignore[union-attr]
    assert check(Chat(b""), "room", Role.ANYONE | Role.MEMBER).reason == \
        "wrong_socket"  # type: ignore[union-attr]


def test_gate_limits_each_peer_with_a_burst_and_refills() -> None:
    limits = Limits(pings_per_s=10.0, pings_burst=5)
    gate = Gate(limits)
    taken = [gate.admit(b"p" * 32, Ping(1), "direct", Role.ANYONE, 0.0) for _ in range(8)]
    assert [t is None for t in taken] == [True] * 5 + [False] * 3
    assert taken[-1] is not None and taken[-1].reason == "rate"
    # another peer has its own bucket
    assert gate.admit(b"q" * 32, Ping(1), "direct", Role.ANYONE, 0.0) is None
    # 0.2 s later two tokens are back
    assert gate.admit(b"p" * 32, Ping(1), "direct", Role.ANYONE, 0.2) is None
    assert gate.admit(b"p" * 32, Ping(1), "direct", Role.ANYONE, 0.2) is None
    assert gate.admit(b"p" * 32, Ping(1), "direct", Role.ANYONE, 0.2) is not None


def test_gate_table_is_bounded() -> None:
    gate = Gate(Limits(max_rate_entries=100))
    for i in range(1000):
        gate.take(i.to_bytes(32, "big"), "ping", 0.0)
    assert len(gate) == 100


@pytest.mark.parametrize("cls", ALL_TYPES)
def test_every_type_has_a_rate_group(cls: type) -> None:
    assert rate_group(cls) in ("presence", "broadcast", "introduction", "ping", "private",
                               "join", "history", "state", "room", "direct", "file_offer",
                               "file", "asked")


def test_pongs_to_a_run_of_pings_are_not_cut_by_the_direct_budget() -> None:
    """/ping back to back at several thousand a second: every pong that answers one of our
    pings gets through (it used to draw on "direct", 500/s with a burst of 2,000, and one
    pong in about 2,000 was dropped: a 3 s timeout)."""
    limits = Limits()
    gate = Gate(limits)
    peer = bytes(32)
    n = limits.direct_frames_burst + 1000
    admitted = sum(gate.admit(peer, Pong(i), "direct", Role.ANYONE | Role.ASKED,
                              now=i / 5000) is None for i in range(n))
    assert admitted == n
    assert rate_group(Pong) == "asked"
    # Unasked, it is still refused, by the table (not by a bucket).
    refusal = gate.admit(peer, Pong(1), "direct", Role.ANYONE, now=1.0)
    assert refusal is not None and refusal.reason == "unsolicited"
