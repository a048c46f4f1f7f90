"""Two rooms with one name are two choices, told apart by the host's fingerprint (issue 6)."""

from __future__ import annotations

import json

from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from meshchat import AmbiguousName, JoinRefused, PeerInfo, RoomInfo
from meshchat.cli import rooms_output
from meshchat.tui import render
from meshchat.tui.app import MeshCompleter
from tests.unit.uifake import BOB, FakeRoom, Session

DORA = PeerInfo("dora", "3smwxyz1abcdefgh", ("10.0.0.5",), b"3")
TWO_LOBBIES = [
    RoomInfo("lobby", "dora", 2, False, host_fingerprint=DORA.fingerprint),
    RoomInfo("dev", "carol", 3, True, True, host_fingerprint="cccc000011112222"),
    RoomInfo("lobby", "bob", 1, False, host_fingerprint=BOB.fingerprint),
]


def test_the_rooms_line_tells_rooms_of_one_name_apart() -> None:
    assert render.rooms_line(TWO_LOBBIES) == (
        "rooms: dev (carol, 3 members, locked, password),"
        " lobby (host bob#bbbbcccc, 1 member), lobby (host dora#3smwxyz1, 2 members);"
        " names shared by several rooms: /join NAME#FP picks one (/join lobby#bbbbcccc)")
    assert render.rooms_line(TWO_LOBBIES[:2]) == (
        "rooms: dev (carol, 3 members, locked, password), lobby (dora, 2 members)")


def test_room_references() -> None:
    assert render.split_room_ref("lobby#3SMW") == ("lobby", "3smw")
    assert render.split_room_ref("lobby") == ("lobby", None)
    assert render.split_room_ref("c#") == ("c#", None)
    assert render.split_room_ref("a#b") == ("a#b", None)  # too short for a fingerprint prefix
    assert render.matching_rooms(TWO_LOBBIES, "lobby#3smw") == [TWO_LOBBIES[0]]
    assert render.matching_rooms(TWO_LOBBIES, "lobby") == [TWO_LOBBIES[0], TWO_LOBBIES[2]]
    assert render.matching_rooms(TWO_LOBBIES, "lobby#zzzz") == []
    same_host_twice = [TWO_LOBBIES[0], TWO_LOBBIES[0]]  # one room heard of twice
    assert render.clashing_room_names(same_host_twice) == set()


async def test_rooms_command_lists_both() -> None:
    s = Session()
    s.node.network_rooms = TWO_LOBBIES
    [line] = await s("/rooms")
    assert "lobby (host bob#bbbbcccc, 1 member), lobby (host dora#3smwxyz1, 2 members)" in line


async def test_join_passes_name_and_fingerprint_prefix_through() -> None:
    s = Session()
    room = FakeRoom(s.node, "lobby", DORA, [DORA])
    s.node.remote_rooms["lobby#3smw"] = room
    assert await s("/join lobby#3smw") == [
        "* joining lobby#3smw…", "* joined lobby (host dora; members: dora, alice)"]
    assert s.node.joined == ["lobby#3smw"]
    assert s.ctl.room is room
    assert await s("/join lobby#3smw") == ["* error: you are already in lobby#3smw"]
    s.node.remote_rooms["lobby#bbbb"] = FakeRoom(s.node, "lobby", BOB, [BOB])
    assert (await s("/join lobby#bbbb"))[-1] == "* joined lobby (host bob; members: bob, alice)"


async def test_an_ambiguous_join_names_the_choices() -> None:
    s = Session()
    s.node.network_rooms = TWO_LOBBIES
    await s("/rooms")
    s.node.join_error = AmbiguousName("lobby", ["lobby (bbbbcccc)", "lobby (3smwxyz1)"])
    assert (await s("/join lobby"))[-1] == (
        "* error: 2 rooms are called lobby: /join lobby#bbbbcccc (host bob)"
        " or /join lobby#3smwxyz1 (host dora)")
    assert s.ctl.room is None


async def test_an_ambiguous_join_without_a_listing_says_how_to_choose() -> None:
    s = Session()
    s.node.join_error = JoinRefused("ambiguous")
    [_, line] = await s("/join lobby")
    assert line.startswith("* error: ")
    assert line.endswith("— /join lobby#FP picks one (FP: its host's fingerprint, /rooms)")


async def test_startup_room_with_a_fingerprint_joins_that_one() -> None:
    s = Session()
    s.node.network_rooms = TWO_LOBBIES
    s.node.remote_rooms["lobby#3smw"] = FakeRoom(s.node, "lobby", DORA, [DORA])
    await s.ctl.startup(room="lobby#3smw")
    assert s.lines[1:] == ["* joining lobby#3smw…",
                           "* joined lobby (host dora; members: dora, alice)"]
    assert s.node.hosted == []


async def test_startup_never_picks_or_hosts_a_clashing_name_silently() -> None:
    s = Session()
    s.node.network_rooms = TWO_LOBBIES
    s.node.join_error = AmbiguousName("lobby", [])
    await s.ctl.startup(room="lobby")
    assert s.lines[-1] == ("* error: 2 rooms are called lobby: /join lobby#bbbbcccc (host bob)"
                           " or /join lobby#3smwxyz1 (host dora)")
    await s.ctl.startup(room="lobby#zzzz")
    assert s.lines[-1] == ("* error: no room lobby hosted by zzzz… on the network"
                           " (/rooms lists them)")
    assert s.node.hosted == [] and s.ctl.room is None


async def test_info_and_ping_on_a_clashing_name() -> None:
    s = Session()
    s.node.network_rooms = TWO_LOBBIES
    await s("/rooms")
    assert await s("/info lobby") == ["* room lobby (host bob#bbbbcccc, 1 member)",
                                      "* room lobby (host dora#3smwxyz1, 2 members)"]
    assert await s("/ping lobby") == [
        "* error: 2 rooms are called lobby: /ping one of lobby#bbbbcccc, lobby#3smwxyz1"]
    assert await s("/ping dev") == ["* ping dev (host carol): 1.23 ms"]


async def test_completion_after_join_offers_the_rooms() -> None:
    s = Session()
    s.node.network_rooms = TWO_LOBBIES
    await s("/rooms")
    assert s.ctl.completion_names("/join ") == ["dev", "lobby#3smwxyz1", "lobby#bbbbcccc"]
    assert s.ctl.completion_names("//join lo") == ["dev", "lobby#3smwxyz1", "lobby#bbbbcccc"]
    assert "bob" in s.ctl.completion_names("/msg ")
    assert "bob" in s.ctl.completion_names("/join lobby ")  # the password: not a room
    completer = MeshCompleter(s.ctl.completion_names)
    found = completer.get_completions(Document("/join lo"),
                                      CompleteEvent(completion_requested=True))
    assert [c.text for c in found] == ["lobby#3smwxyz1", "lobby#bbbbcccc"]
    s.node.network_rooms = [RoomInfo("lob\x1bby", "x", 1, False, host_fingerprint="abcd")]
    await s("/rooms")
    assert "lob\x1bby" not in s.ctl.completion_names("/join ")


def test_meshchat_rooms_table_and_json() -> None:
    assert rooms_output(TWO_LOBBIES, as_json=False) == [
        "ROOM   HOST           MEMBERS  FLAGS",
        "dev    carol          3        locked,password",
        "lobby  bob#bbbbcccc   1",
        "lobby  dora#3smwxyz1  2",
        "2 rooms are called lobby: pick one with --room or /join: lobby#bbbbcccc, lobby#3smwxyz1",
    ]
    listed = json.loads("\n".join(rooms_output(TWO_LOBBIES, as_json=True)))
    assert [(r["name"], r["host_fingerprint"], r["join"]) for r in listed] == [
        ("dev", "cccc000011112222", "dev"),
        ("lobby", BOB.fingerprint, "lobby#bbbbcccc"),
        ("lobby", DORA.fingerprint, "lobby#3smwxyz1"),
    ]
    assert rooms_output([], as_json=False) == ["no rooms on the network"]
    assert rooms_output([], as_json=True) == ["[]"]
