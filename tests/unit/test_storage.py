"""Storage adapters on real files in tmp_path: modes, persistence, damaged files, TOFU, the log."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshchat.errors import MeshchatError
from meshchat.identity import Identity, fingerprint_of
from meshchat.protocol.messages import PeerCard
from meshchat.storage import (
    KnownPeers,
    LogRow,
    MessageLog,
    Settings,
    SettingsStore,
    default_data_dir,
    keystore,
    load_or_create_identity,
)

from ..threads import at_once

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that hides nothing, so any private mode must come from the code itself."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def write_private(path: Path, data: bytes) -> None:
    """A file as meshchat itself would have left it (0600), so only its content is at issue."""
    path.write_bytes(data)
    path.chmod(0o600)


def peer(n: int) -> bytes:
    return Identity(n.to_bytes(2, "big") * 16).peer_id


# ---------------------------------------------------------------- keystore


def test_default_data_dir_is_named_for_meshchat() -> None:
    assert "meshchat" in default_data_dir().name.lower()


@posix_only
def test_first_start_creates_private_dir_and_key(tmp_path: Path, open_umask: None) -> None:
    data_dir = tmp_path / "a" / "data"
    identity = load_or_create_identity(data_dir)
    key = data_dir / "identity.key"
    assert mode_of(data_dir) == 0o700
    assert mode_of(key) == 0o600
    assert key.read_bytes() == identity.seed
    assert [p.name for p in data_dir.iterdir()] == ["identity.key"]  # no temp file left


@posix_only
def test_key_file_is_private_before_it_gets_its_name(
    tmp_path: Path, open_umask: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    modes: list[int] = []
    real_link = os.link

    def spy(src: str | Path, dst: str | Path, **kwargs: object) -> None:
        modes.append(mode_of(Path(src)))
        real_link(src, dst)

    monkeypatch.setattr(os, "link", spy)
    load_or_create_identity(tmp_path)
    assert modes == [0o600]


def test_identity_persists_across_loads(tmp_path: Path) -> None:
    first = load_or_create_identity(tmp_path)
    second = load_or_create_identity(tmp_path)
    assert second.peer_id == first.peer_id
    assert second.seed == first.seed


def test_each_data_dir_gets_its_own_identity(tmp_path: Path) -> None:
    a = load_or_create_identity(tmp_path / "a")
    b = load_or_create_identity(tmp_path / "b")
    assert a.peer_id != b.peer_id


@pytest.mark.parametrize("content", [b"", b"short", bytes(33), bytes(4096)])
def test_corrupt_key_file_is_a_clear_error_and_left_alone(tmp_path: Path, content: bytes) -> None:
    key = tmp_path / "identity.key"
    key.write_bytes(content)
    os.utime(key, (1_000_000, 1_000_000))
    mode_before = mode_of(key)
    with pytest.raises(MeshchatError, match=r"identity key .*identity\.key.* corrupt"):
        load_or_create_identity(tmp_path)
    assert key.read_bytes() == content
    assert key.stat().st_mtime == 1_000_000
    assert mode_of(key) == mode_before


def test_key_path_that_is_a_directory_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "identity.key").mkdir()
    with pytest.raises(MeshchatError, match=r"identity\.key"):
        load_or_create_identity(tmp_path)


@posix_only
def test_too_open_key_file_is_tightened_and_reported(tmp_path: Path) -> None:
    seed = bytes(range(32))
    key = tmp_path / "identity.key"
    key.write_bytes(seed)
    key.chmod(0o644)
    warnings: list[str] = []
    identity = load_or_create_identity(tmp_path, warnings)
    assert identity.seed == seed
    assert mode_of(key) == 0o600
    assert len(warnings) == 1
    assert str(key) in warnings[0] and "0644" in warnings[0]


def test_private_write_without_replace_keeps_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"first")
    assert keystore.write_private_file(target, b"second", replace=False) is False
    assert target.read_bytes() == b"first"
    assert keystore.write_private_file(target, b"third") is True
    assert target.read_bytes() == b"third"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


# ---------------------------------------------------------------- settings


def test_settings_default_when_missing(tmp_path: Path) -> None:
    store = SettingsStore(tmp_path)
    assert store.load() == Settings()
    assert store.warnings == []


@posix_only
def test_settings_round_trip(tmp_path: Path, open_umask: None) -> None:
    settings = Settings(
        name="Zoë",
        color="#ff8800",
        renamed_at=1_700_000_000.5,
        former_names=[("zoe", 1_600_000_000.0), ("z", 1_650_000_000.0)],
    )
    SettingsStore(tmp_path).save(settings)
    assert SettingsStore(tmp_path).load() == settings
    assert mode_of(tmp_path / "settings.json") == 0o600


def test_settings_save_replaces_previous(tmp_path: Path) -> None:
    store = SettingsStore(tmp_path)
    store.save(Settings(name="a"))
    store.save(Settings(name="b", color="red"))
    assert store.load() == Settings(name="b", color="red")


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe", b"[1, 2]", b"null"])
def test_corrupt_settings_give_defaults_and_a_backup(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "settings.json"
    write_private(path, content)
    store = SettingsStore(tmp_path)
    assert store.load() == Settings()
    assert len(store.warnings) == 1 and "settings.json" in store.warnings[0]
    backups = list(tmp_path.glob("settings.json.corrupt-*"))
    assert len(backups) == 1
    assert backups[0].read_bytes() == content
    store.save(Settings(name="again"))
    assert SettingsStore(tmp_path).load().name == "again"


def test_settings_with_bad_fields_keep_the_good_ones(tmp_path: Path) -> None:
    data = {"name": "ann", "color": 7, "renamed_at": "yesterday", "former_names": [["x", 5]]}
    write_private(tmp_path / "settings.json", json.dumps(data).encode())
    store = SettingsStore(tmp_path)
    settings = store.load()
    assert settings == Settings(name="ann", former_names=[("x", 5.0)])
    assert len(store.warnings) == 1
    assert "has invalid color, renamed_at;" in store.warnings[0]


# ---------------------------------------------------------------- known peers


def test_first_sighting_is_trusted(tmp_path: Path) -> None:
    peers = KnownPeers(tmp_path)
    assert peers.observe(peer(1), "ann", ["10.0.0.1"], router_port=5000, now=10.0) == []
    known = peers.get(peer(1))
    assert known is not None
    assert (known.name, known.first_seen, known.addresses, known.router_port) == (
        "ann",
        10.0,
        ("10.0.0.1",),
        5000,
    )
    assert peers.get(peer(2)) is None


def test_known_name_with_another_key_warns_once(tmp_path: Path) -> None:
    peers = KnownPeers(tmp_path)
    peers.observe(peer(1), "ann", now=1.0)
    warnings = peers.observe(peer(2), "ann", now=2.0)
    assert len(warnings) == 1
    assert "'ann'" in warnings[0]
    assert fingerprint_of(peer(2)) in warnings[0]
    assert fingerprint_of(peer(1)) in warnings[0].split("was")[1]
    assert peers.observe(peer(2), "ann", now=3.0) == []
    assert peers.observe(peer(1), "ann", now=4.0) == []
    assert peers.named("ANN") == sorted([peer(1), peer(2)])


def test_name_check_ignores_case(tmp_path: Path) -> None:
    peers = KnownPeers(tmp_path)
    peers.observe(peer(1), "Ann", now=1.0)
    assert len(peers.observe(peer(2), "ann ", now=2.0)) == 1


def test_rename_is_not_a_warning_and_keeps_former_names(tmp_path: Path) -> None:
    peers = KnownPeers(tmp_path)
    peers.observe(peer(1), "ann", now=1.0)
    assert peers.observe(peer(1), "anna", now=2.0) == []
    peers.observe(peer(1), "annie", now=3.0)
    assert peers.former_names(peer(1)) == ["ann", "anna"]
    known = peers.get(peer(1))
    assert known is not None and known.name == "annie" and known.first_seen == 1.0
    assert peers.former_names(peer(9)) == []


def test_trust_survives_a_restart(tmp_path: Path) -> None:
    first = KnownPeers(tmp_path)
    first.observe(peer(1), "ann", now=1.0)
    first.flush()
    again = KnownPeers(tmp_path)
    assert again.load() == []
    assert len(again.observe(peer(2), "ann", now=5.0)) == 1


@posix_only
def test_flush_writes_addresses_and_last_seen(tmp_path: Path, open_umask: None) -> None:
    peers = KnownPeers(tmp_path)
    card = PeerCard(peer(1), "ann", ("10.0.0.1",), 5000, 5001, 5002)
    peers.observe_card(card, now=1.0)
    peers.flush()
    peers.observe(peer(1), "ann", ["10.0.0.9", "fe80::1"], pub_port=6001, now=7.0)
    assert KnownPeers(tmp_path).get(peer(1)).last_seen == 1.0  # type: ignore[union-attr]
    peers.flush()
    known = KnownPeers(tmp_path).get(peer(1))
    assert known is not None
    assert known.last_seen == 7.0
    assert known.addresses == ("10.0.0.9", "fe80::1")
    assert (known.router_port, known.pub_port, known.card_port) == (5000, 6001, 5002)
    assert mode_of(tmp_path / "peers.json") == 0o600


def test_peer_count_is_bounded_least_recently_seen_go(tmp_path: Path) -> None:
    peers = KnownPeers(tmp_path, max_peers=3)
    for n in range(1, 6):
        peers.observe(peer(n), f"p{n}", now=float(n))
    peers.observe(peer(3), "p3", now=10.0)
    peers.observe(peer(6), "p6", now=11.0)
    assert sorted(p.peer_id for p in peers.all()) == sorted([peer(3), peer(5), peer(6)])
    assert peers.named("p1") == []
    assert peers.all()[0].peer_id == peer(6)
    peers.flush()
    assert len(KnownPeers(tmp_path, max_peers=3)) == 3


def test_names_per_peer_are_bounded(tmp_path: Path) -> None:
    peers = KnownPeers(tmp_path)
    for n in range(40):
        peers.observe(peer(1), f"name{n}", now=float(n))
    known = peers.get(peer(1))
    assert known is not None
    assert known.name == "name39"
    assert len(known.names) <= 16
    assert peers.named("name0") == []
    assert peers.named("name39") == [peer(1)]


def test_corrupt_peers_file_starts_empty_with_backup(tmp_path: Path) -> None:
    write_private(tmp_path / "peers.json", b"{truncated")
    peers = KnownPeers(tmp_path)
    warnings = peers.load()
    assert len(warnings) == 1 and "peers.json" in warnings[0]
    assert len(peers) == 0
    assert len(list(tmp_path.glob("peers.json.corrupt-*"))) == 1
    peers.observe(peer(1), "ann", now=1.0)
    peers.flush()
    assert KnownPeers(tmp_path).get(peer(1)) is not None


def test_bad_entries_are_dropped_good_ones_kept(tmp_path: Path) -> None:
    first = KnownPeers(tmp_path)
    first.observe(peer(1), "ann", now=1.0)
    first.flush()
    data = json.loads((tmp_path / "peers.json").read_text())
    data["peers"].append({"id": "zz", "name": "evil"})
    write_private(tmp_path / "peers.json", json.dumps(data).encode())
    peers = KnownPeers(tmp_path)
    assert len(peers.load()) == 1
    assert [p.name for p in peers.all()] == ["ann"]


def test_observe_rejects_a_bad_peer_id(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        KnownPeers(tmp_path).observe(b"short", "ann")


def test_pins_are_never_evicted_and_survive_a_restart(tmp_path: Path) -> None:
    peers = KnownPeers(tmp_path, max_peers=3)
    peers.observe(peer(1), "friend", now=1.0)
    assert peers.pin(peer(1)) and peers.is_pinned(peer(1))
    assert not peers.pin(peer(99))  # unknown: nothing to pin
    for n in range(2, 2000):  # a crowd of strangers passes by
        peers.observe(peer(n), f"stranger{n}", now=float(n))
    assert peers.get(peer(1)) is not None and peers.named("friend") == [peer(1)]
    assert len(peers) == 1 + 3
    assert len(peers.observe(peer(5000), "friend", now=3000.0)) == 1  # still warns
    peers.flush()
    again = KnownPeers(tmp_path, max_peers=3)
    known = again.get(peer(1))
    assert known is not None and known.pinned
    assert len(again.observe(peer(5001), "friend", now=4000.0)) == 1


def test_pins_are_bounded_and_old_pins_stay(tmp_path: Path) -> None:
    peers = KnownPeers(tmp_path, max_peers=2, max_pinned=2)
    for n in (1, 2):
        peers.observe(peer(n), f"p{n}", now=float(n))
    assert peers.pin(peer(1)) and peers.pin(peer(2))
    peers.observe(peer(3), "p3", now=3.0)
    assert not peers.pin(peer(3))  # too many pinned: refused, the others stay
    for n in range(10, 20):
        peers.observe(peer(n), f"p{n}", now=float(n))
    assert peers.is_pinned(peer(1)) and peers.is_pinned(peer(2))
    assert peers.get(peer(3)) is None and len(peers) == 4


def test_changes_are_written_only_when_flushed(tmp_path: Path) -> None:
    peers = KnownPeers(tmp_path)
    for n in range(1, 500):
        peers.observe(peer(n), f"p{n}", now=float(n))
    assert peers.writes == 0 and not (tmp_path / "peers.json").exists()
    assert peers.dirty
    peers.flush()
    peers.flush()  # nothing changed since: no second write
    assert peers.writes == 1 and len(KnownPeers(tmp_path)) == 499


def test_an_older_snapshot_never_overwrites_a_newer_one(tmp_path: Path) -> None:
    peers = KnownPeers(tmp_path)
    peers.observe(peer(1), "ann", now=1.0)
    old = peers.snapshot()
    peers.observe(peer(2), "bob", now=2.0)
    new = peers.snapshot()
    assert old is not None and new is not None and peers.snapshot() is None
    assert peers.write(new)
    assert not peers.write(old)  # a slow thread's older write arrives late: skipped
    assert sorted(p.name for p in KnownPeers(tmp_path).all()) == ["ann", "bob"]


# ---------------------------------------------------------------- message log

ROOM = b"r" * 16
A, B, C = peer(1), peer(2), peer(3)


def add(log: MessageLog, sender: bytes, seq: int, sent_at: float = 0.0, room: bytes = ROOM) -> bool:
    return log.add(room, sender, seq, sent_at, f"m{seq}", b"signed:" + sender[:2] + bytes([seq]))


@pytest.fixture
def log() -> Iterator[MessageLog]:
    with MessageLog(":memory:") as mem:
        yield mem


def test_log_drops_duplicates(log: MessageLog) -> None:
    assert add(log, A, 1) is True
    assert add(log, A, 1) is False
    assert log.add(ROOM, A, 1, 99.0, "other text", b"x") is False
    assert log.count(ROOM) == 1
    assert log.all(ROOM)[0].text == "m1"
    assert add(log, A, 1, room=b"other") is True
    assert log.count(ROOM) == 1


def test_add_many_counts_new_rows(log: MessageLog) -> None:
    rows = [LogRow(ROOM, A, s, float(s), "t", b"b") for s in (1, 2, 2, 3)]
    assert log.add_many(rows) == 3
    assert log.add_many(rows) == 0


def test_seq_must_start_at_one(log: MessageLog) -> None:
    with pytest.raises(ValueError):
        add(log, A, 0)
    with pytest.raises(ValueError):
        log.add(ROOM, A, 1, float("nan"), "t", b"b")


def test_heads_and_missing_with_gaps(log: MessageLog) -> None:
    for seq in (1, 2, 4, 5, 8):
        add(log, A, seq)
    add(log, B, 3)
    assert log.heads(ROOM) == {A: 2, B: 0}
    assert log.max_seq(ROOM) == {A: 8, B: 3}
    assert log.missing(ROOM, A, 10) == [(3, 3), (6, 7), (9, 10)]
    assert log.missing(ROOM, A, 10, limit=2) == [(3, 3), (6, 7)]
    assert log.missing(ROOM, A, 2) == []
    assert log.missing(ROOM, B, 3) == [(1, 2)]
    assert log.missing(ROOM, C, 2) == [(1, 2)]

    add(log, A, 3)  # fills the first gap: the head jumps over 4 and 5
    assert log.heads(ROOM)[A] == 5
    add(log, A, 7)
    add(log, A, 6)
    assert log.heads(ROOM)[A] == 8
    assert log.missing(ROOM, A, 8) == []
    assert log.heads(b"empty room") == {}


def test_heads_match_a_brute_force_count(tmp_path: Path) -> None:
    rng = random.Random(7)
    path = tmp_path / "log.db"
    held: dict[bytes, set[int]] = {A: set(), B: set()}
    with MessageLog(path) as log:
        for _ in range(400):
            sender = rng.choice([A, B])
            seq = rng.randint(1, 60)
            assert add(log, sender, seq) is (seq not in held[sender])
            held[sender].add(seq)
            expected_head = 0
            while expected_head + 1 in held[sender]:
                expected_head += 1
            assert log.heads(ROOM)[sender] == expected_head
        live = log.heads(ROOM)
    with MessageLog(path) as reopened:
        assert reopened.heads(ROOM) == live
        assert reopened.max_seq(ROOM) == {s: max(seqs) for s, seqs in held.items()}
        assert reopened.count(ROOM) == sum(len(seqs) for seqs in held.values())


def test_canonical_order_is_the_same_whatever_the_arrival_order(tmp_path: Path) -> None:
    records = [(s, seq, t) for s in (A, B, C) for seq, t in enumerate([5.0, 5.0, 6.0, 1.0], 1)]
    orders = []
    for attempt in range(3):
        shuffled = records[:]
        random.Random(attempt).shuffle(shuffled)
        with MessageLog(":memory:") as log:
            for sender, seq, t in shuffled:
                add(log, sender, seq, t)
            orders.append([(r.sender, r.seq) for r in log.all(ROOM)])
            assert [(r.sender, r.seq) for r in log.last(ROOM, 4)] == orders[-1][-4:]
    assert orders[0] == orders[1] == orders[2]
    keys = [(t, s, seq) for s, seq, t in records]
    assert orders[0] == [(s, seq) for t, s, seq in sorted(keys)]


def test_last_and_range(log: MessageLog) -> None:
    for seq in range(1, 11):
        add(log, A, seq, sent_at=100.0 + seq)
    assert [r.seq for r in log.last(ROOM, 3)] == [8, 9, 10]
    assert len(log.last(ROOM, 50)) == 10
    assert log.last(ROOM, 0) == []
    rows = log.range(ROOM, A, 4, 6)
    assert [r.seq for r in rows] == [4, 5, 6]
    assert rows[0].blob == b"signed:" + A[:2] + bytes([4])
    assert [r.seq for r in log.range(ROOM, A, 4, 9, limit=2)] == [4, 5]
    assert log.range(ROOM, B, 1, 10) == []


def test_log_persists_after_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "log.db"
    with MessageLog(path) as log:
        for seq in (1, 2, 3, 5):
            add(log, A, seq, sent_at=float(seq))
        log.save_room(ROOM, "lobby", b"state-1", now=1.0)
        log.add_private(B, "in", 3.0, "psst")
    with MessageLog(path) as log:
        assert log.count(ROOM) == 4
        assert log.heads(ROOM) == {A: 3}
        assert [r.text for r in log.all(ROOM)] == ["m1", "m2", "m3", "m5"]
        assert log.load_room(ROOM) == (ROOM, "lobby", b"state-1", 1.0)
        assert [p.text for p in log.privates(B, 10)] == ["psst"]


def test_next_seq_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    with MessageLog(path) as log:
        assert log.next_seq(ROOM, A) == 1
        add(log, A, log.next_seq(ROOM, A))
        add(log, A, log.next_seq(ROOM, A))
        assert log.next_seq(ROOM, A) == 3
        log.flush()
    with MessageLog(path) as log:
        assert log.next_seq(ROOM, A) == 3
        assert log.next_seq(ROOM, B) == 1
        assert log.next_seq(b"other", A) == 1


@posix_only
def test_log_file_is_private(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "log.db"
    with MessageLog(path) as log:
        add(log, A, 1)
    assert mode_of(path) == 0o600


def test_writes_are_batched_until_flush(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    with MessageLog(path) as log:
        for seq in range(1, 6):
            add(log, A, seq)
        assert log.count(ROOM) == 5  # our own reads see the pending rows
        other = sqlite3.connect(path)
        try:
            assert other.execute("SELECT COUNT(*) FROM chat").fetchone() == (0,)
            log.flush()
            assert other.execute("SELECT COUNT(*) FROM chat").fetchone() == (5,)
        finally:
            other.close()


def test_close_flushes_and_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    log = MessageLog(path)
    add(log, A, 1)
    log.close()
    log.close()
    with MessageLog(path) as again:
        assert again.count(ROOM) == 1


def test_rooms_upsert_and_listing(log: MessageLog) -> None:
    assert log.load_room(ROOM) is None
    log.save_room(ROOM, "lobby", b"v1", now=1.0)
    log.save_room(b"second room", "dev", b"w1", now=2.0)
    log.save_room(ROOM, "lobby2", b"v2", now=3.0)
    assert [(r.name, r.state) for r in log.rooms()] == [("lobby2", b"v2"), ("dev", b"w1")]


def test_private_messages_in_order(log: MessageLog) -> None:
    log.add_private(B, "out", 2.0, "second")
    log.add_private(B, "in", 1.0, "first")
    log.add_private(C, "in", 1.5, "elsewhere")
    log.add_private(B, "in", 3.0, "third")
    assert [(p.direction, p.text) for p in log.privates(B, 2)] == [
        ("out", "second"),
        ("in", "third"),
    ]
    with pytest.raises(ValueError):
        log.add_private(B, "sideways", 1.0, "x")  # type: ignore[arg-type]


def test_export_text(log: MessageLog, tmp_path: Path) -> None:
    add(log, B, 1, sent_at=2.0)
    add(log, A, 1, sent_at=1.0)
    log.add(ROOM, A, 2, 3.0, "two\nlines", b"b")
    out = tmp_path / "chat.txt"
    names = {A: "ann", B: "bob"}
    assert log.export_text(ROOM, out, lambda r: f"{names[r.sender]}: {r.text}") == 3
    assert out.read_text() == "ann: m1\nbob: m1\nann: two\nlines\n"
    assert log.export_text(ROOM, tmp_path / "default.txt") == 3
    lines = (tmp_path / "default.txt").read_text().splitlines()
    assert lines[0].endswith(": m1") and lines[3] == "    lines"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chat.txt", "default.txt"]


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(MeshchatError, match=r"log\.db"):
        MessageLog(path)
    assert path.read_bytes() == b"this is not sqlite" * 100


def test_add_many_on_a_reopened_log_counts_each_row_once(tmp_path: Path) -> None:
    room, author = b"r" * 16, b"a" * 32
    path = tmp_path / "log.sqlite"
    with MessageLog(path) as log:
        log.add(room, author, 1, 1.0, "one", b"blob")
    with MessageLog(path) as log:  # nothing of this room indexed yet
        assert log.add_many([(room, author, 2, 2.0, "two", b"blob"),
                             (room, author, 3, 3.0, "three", b"blob")]) == 2
        assert log.count(room) == 3
        assert log.heads(room) == {author: 3}
        assert log.next_seq(room, author) == 4


def test_a_deferred_log_is_the_same_log_opened_on_first_use_or_by_open(tmp_path: Path
                                                                        ) -> None:
    """``deferred``: Node.start opens it in a thread once it has announced itself; a use
    before that opens it there and then (never a log that is not open)."""
    room, author = b"r" * 16, b"a" * 32
    path = tmp_path / "log.sqlite"
    log = MessageLog(path, deferred=True)
    assert log.add(room, author, 1, 1.0, "one", b"blob")  # used before open(): opens it
    log.open()
    log.open()  # once open, nothing more
    assert log.add(room, author, 2, 2.0, "two", b"blob")
    log.close()
    told = MessageLog(tmp_path / "two.sqlite", deferred=True)
    told.open()
    assert told.add(room, author, 1, 1.0, "told first", b"blob")
    told.close()
    with MessageLog(path) as again:
        assert [r.text for r in again.all(room)] == ["one", "two"]
    never = tmp_path / "never.sqlite"
    MessageLog(never, deferred=True).close()  # closed before it was ever used: not made
    assert not never.exists()
    closed = MessageLog(tmp_path / "closed.sqlite", deferred=True)
    closed.close()
    with pytest.raises(MeshchatError, match="closed"):
        closed.open()


def test_a_deferred_log_opened_from_two_threads_at_once_opens_once(tmp_path: Path) -> None:
    log = MessageLog(tmp_path / "log.sqlite", deferred=True)
    assert at_once(lambda: log.heads(b"r" * 16)) == []
    log.close()


def test_a_deferred_log_raises_its_error_on_open_and_on_use(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    path.write_bytes(b"this is not sqlite" * 100)
    log = MessageLog(path, deferred=True)
    with pytest.raises(MeshchatError, match=r"log\.db"):
        log.open()
    with pytest.raises(MeshchatError, match=r"log\.db"):
        log.heads(b"r" * 16)
    log.close()
