"""The slash-command table, parser and completion (pure: no node, no I/O)."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshchat import commands as c
from meshchat.errors import CommandError

SEED_COMMANDS = (
    "/help /msg /join /leave /list /rooms /host /new host /new servername /new password /myColor "
    "/rename /info /test server /send file /save chat /ping /version /uptime /broadcast /kick "
    "/ban /unban /banned /users /user-count /lock /unlock /close /whoami /quit"
)


def _seed_names() -> list[str]:
    names: list[str] = []
    for part in SEED_COMMANDS.split("/")[1:]:
        names.append(part.strip())
    return names


def test_the_table_holds_every_command_of_the_design_once() -> None:
    table = [s.name for s in c.COMMANDS]
    seed = _seed_names()
    assert table[:len(seed)] == seed
    assert table[len(seed):] == ["accept", "decline", "files", "cancel",  # issue 7
                                 "bell", "clear", "me", "away"]  # issue 11
    assert len(set(table)) == len(table)


def test_host_only_flags_follow_the_issues() -> None:
    host_only = {s.name for s in c.COMMANDS if s.host_only}
    assert host_only == {
        "new host", "new servername", "new password", "kick", "ban", "unban", "banned", "users",
        "user-count", "lock", "unlock", "close",
    }
    assert all(c.spec_for(n).action for n in host_only)


@pytest.mark.parametrize(("line", "expected"), [
    ("/help", c.Help()),
    ("/help kick", c.Help("kick")),
    ("/help /new", c.Help("new")),
    ("/msg bob hi there", c.Msg(("bob",), "hi there")),
    ("/msg bob,carol hi", c.Msg(("bob", "carol"), "hi")),
    ("/msg bob, carol hi", c.Msg(("bob", "carol"), "hi")),
    ("/msg bob,bob  hi", c.Msg(("bob",), "hi")),
    ('/msg "max m" hallo', c.Msg(("max m",), "hallo")),
    ("/join lobby", c.Join("lobby")),
    ("/join lobby secret words", c.Join("lobby", "secret words")),
    ('/join "my room" pw', c.Join("my room", "pw")),
    ("/leave", c.Leave()),
    ("/list", c.List()),
    ("/rooms", c.Rooms()),
    ("/host lobby", c.Host("lobby")),
    ("/host lobby pw", c.Host("lobby", "pw")),
    ("/new host bob", c.NewHost("bob")),
    ("/new host 10.0.0.2:47001", c.NewHost("10.0.0.2:47001")),
    ("/new host 10.0.0.2 47001", c.NewHost("10.0.0.2:47001")),
    ("/new servername hall", c.NewRoomName("hall")),
    ("/new password s3cret", c.NewPassword("s3cret")),
    ("/new password", c.NewPassword(None)),
    ("/myColor", c.MyColor()),
    ("/myColor blue", c.MyColor("blue")),
    ("/myColor #FF8800", c.MyColor("#ff8800")),
    ("/myColor f80", c.MyColor("#ff8800")),
    ("/rename alicia", c.Rename("alicia")),
    ("/info", c.Info()),
    ("/info bob", c.Info("bob")),
    ("/test server", c.TestServer()),
    ("/send file bob ./notes.txt", c.SendFile("bob", "./notes.txt")),
    ('/send file bob "my notes.txt"', c.SendFile("bob", "my notes.txt")),
    ("/save chat", c.SaveChat()),
    ("/save chat log.txt", c.SaveChat("log.txt")),
    ("/ping", c.Ping()),
    ("/away", c.Away()),
    ("/away   ", c.Away()),
    ("/away out for lunch", c.Away("out for lunch")),
    ("/AWAY brb", c.Away("brb")),
    ("/ping alice", c.Ping("alice")),
    ("/version", c.Version()),
    ("/uptime", c.Uptime()),
    ("/broadcast coffee is ready", c.Broadcast("coffee is ready")),
    ("/me waves at everyone", c.Me("waves at everyone")),
    ("/kick bob", c.Kick("bob")),
    ("/kick bob too loud", c.Kick("bob", "too loud")),
    ("/ban bob spam", c.Ban("bob", "spam")),
    ("/unban bob", c.Unban("bob")),
    ("/banned", c.Banned()),
    ("/users", c.Users()),
    ("/user-count", c.UserCount()),
    ("/lock", c.Lock()),
    ("/unlock", c.Unlock()),
    ("/close", c.Close()),
    ("/whoami", c.Whoami()),
    ("/quit", c.Quit()),
    ("hello everyone", c.Say("hello everyone")),
    ("hello\n", c.Say("hello")),
    ("", c.Say("")),
])
def test_every_command_parses(line: str, expected: c.Command) -> None:
    assert c.parse(line) == expected


@pytest.mark.parametrize(("line", "expected"), [
    ("/new Passwort geheim", c.NewPassword("geheim")),
    ("/new roomname hall", c.NewRoomName("hall")),
    ("/banned-users", c.Banned()),
    ("/delete-channel lobby", c.Close("lobby")),
    ("/mycolor red", c.MyColor("red")),
    ("/MYCOLOR rot", c.MyColor("red")),
    ("/mycolour grey", c.MyColor("gray")),
    ("/exit", c.Quit()),
    ("/MSG bob hi", c.Msg(("bob",), "hi")),
    ("/New HOST bob", c.NewHost("bob")),
    ("//help", c.Help()),
    ("//ban bob spam", c.Ban("bob", "spam")),
    ("//user-count", c.UserCount()),
])
def test_aliases_and_case(line: str, expected: c.Command) -> None:
    assert c.parse(line) == expected


@pytest.mark.parametrize(("line", "said"), [
    ("//shrug", "/shrug"),
    ("// spaced", "/ spaced"),
    ("//", "/"),
])
def test_double_slash_before_a_non_command_says_the_line_with_one_slash(line: str,
                                                                       said: str) -> None:
    assert c.parse(line) == c.Say(said)


@pytest.mark.parametrize(("line", "usage"), [
    ("/msg", "/msg NAME[,NAME...] TEXT"),
    ("/msg bob", "/msg NAME[,NAME...] TEXT"),
    ("/msg , hi", "/msg NAME[,NAME...] TEXT"),
    ("/join", "/join ROOM[#FP] [PASSWORD]"),
    ('/join "lobby', "/join ROOM[#FP] [PASSWORD]"),
    ("/host", "/host ROOM [PASSWORD]"),
    ("/new host", "/new host NAME"),
    ("/new host bob carol", "/new host NAME"),
    ("/new servername", "/new servername NAME"),
    ("/new servername a b", "/new servername NAME"),
    ("/myColor blurple", "/myColor [COLOR]"),
    ("/rename", "/rename NAME"),
    ("/rename two words", "/rename NAME"),
    ("/rename a,b", "/rename NAME"),
    ("/info a b", "/info [NAME|ROOM]"),
    ("/test server now", "/test server"),
    ("/send file", "/send file NAME|ROOM PATH"),
    ("/send file bob", "/send file NAME|ROOM PATH"),
    ("/ping a b", "/ping [NAME|ROOM]"),
    ("/version 2", "/version"),
    ("/broadcast", "/broadcast TEXT"),
    ("/broadcast    ", "/broadcast TEXT"),
    ("/kick", "/kick NAME [REASON]"),
    ("/ban", "/ban NAME [REASON]"),
    ("/unban", "/unban NAME|FINGERPRINT"),
    ("/unban a b", "/unban NAME|FINGERPRINT"),
    ("/leave now", "/leave"),
    ("/close a b", "/close [ROOM]"),
    ("/quit please", "/quit"),
])
def test_bad_arguments_raise_the_usage(line: str, usage: str) -> None:
    with pytest.raises(c.BadArguments) as info:
        c.parse(line)
    assert info.value.usage == usage
    assert str(info.value).endswith(f"usage: {usage}")
    assert isinstance(info.value, CommandError)


def test_an_unknown_colour_says_which_exist() -> None:
    with pytest.raises(CommandError, match=r"unknown colour 'blurple'.*blue.*#RRGGBB"):
        c.parse("/myColor blurple")


def test_unknown_commands() -> None:
    with pytest.raises(c.UnknownCommand) as info:
        c.parse("/foo bar")
    assert str(info.value) == "unknown command /foo — /help lists them"
    with pytest.raises(CommandError, match="unknown command /nope"):
        c.parse("/help nope")
    with pytest.raises(CommandError, match="a command follows the /"):
        c.parse("/")
    with pytest.raises(CommandError, match="a command follows the /"):
        c.parse("/ hi")


@pytest.mark.parametrize("first", ["/new", "/new colour", "/test", "/send", "/save x"])
def test_a_group_word_without_its_sub_command_lists_the_choices(first: str) -> None:
    with pytest.raises(CommandError, match=r"^usage: /"):
        c.parse(first)


def test_new_alone_lists_its_sub_commands() -> None:
    with pytest.raises(CommandError) as info:
        c.parse("/new")
    assert str(info.value) == (
        "usage: /new host NAME | /new servername NAME | /new password [PASSWORD]"
    )


def test_commands_are_frozen() -> None:
    msg = c.parse("/msg bob hi")
    assert isinstance(msg, c.Msg)
    with pytest.raises(AttributeError):
        msg.text = "changed"  # type: ignore[misc]


def test_help_lists_every_command_and_marks_host_only_ones() -> None:
    lines = c.help_text()
    for spec in c.COMMANDS:
        row = next(line for line in lines if line.startswith(spec.usage + " "))
        assert spec.summary in row
        assert ("(host)" in row) == spec.host_only
    assert any("/banned-users = /banned" in line for line in lines)
    assert any("//text says /text" in line for line in lines)
    assert c.help_for("kick") == ["/kick NAME [REASON]  (host only) remove a member from the room"]
    assert c.help_for("new")[0].startswith("/new host NAME")


def test_help_table_markdown_is_a_table_of_every_command() -> None:
    table = c.help_table_markdown().splitlines()
    assert table[0] == "| command | what it does | host only |"
    assert len(table) == 2 + len(c.COMMANDS)
    assert "| `/kick NAME [REASON]` | remove a member from the room | yes |" in table
    assert "| `/unban NAME\\|FINGERPRINT` | lift a ban | yes |" in table


@pytest.mark.parametrize(("text", "color"), [
    ("Blue", "blue"), ("gelb", "yellow"), ("grün", "green"), ("brightred", "bright-red"),
    ("#0a0B0c", "#0a0b0c"), ("abc", "#aabbcc"), ("nope", None), ("#12345", None),
])
def test_normalize_color(text: str, color: str | None) -> None:
    assert c.normalize_color(text) == color


@pytest.mark.parametrize(("name", "ok"), [
    ("alice", True), ("Maximilian", True), ("a" * 32, True), ("a" * 33, False), ("", False),
    ("bob carol", False), ("bob,carol", False), ("bob#1234", False), ("/bob", False),
    ("tab\there", False),
])
def test_validate_name(name: str, ok: bool) -> None:
    assert (c.validate_name(name) is None) == ok


NAMES = ["Maximilian", "Marie", "bob", "lobby"]


@pytest.mark.parametrize(("line", "expected"), [
    ("/ms", ["/msg"]),
    ("/MS", ["/msg"]),
    ("/ne", ["/new host", "/new password", "/new passwort", "/new roomname", "/new servername"]),
    ("/new h", ["host"]),
    ("/new ", ["host", "password", "passwort", "roomname", "servername"]),
    ("/te", ["/test server"]),
    ("/user", ["/user-count", "/users"]),
    ("/delete", ["/delete-channel"]),
    ("//he", ["//help"]),
    ("/msg Ma", ["Marie", "Maximilian"]),
    ("/msg Max", ["Maximilian"]),
    ("/msg max", ["Maximilian"]),
    ("/msg bob,Ma", ["Marie", "Maximilian"]),
    ("/msg bob, Mari", ["Marie"]),
    ("/msg bob hi Ma", ["Marie", "Maximilian"]),
    ("/join lo", ["lobby"]),
    ("/kick b", ["bob"]),
    ("/new host b", ["bob"]),
    ("/info ", ["bob", "lobby", "Marie", "Maximilian"]),
    ("/myColor bl", ["blue"]),
    ("/help ki", ["kick"]),
    ("hi Max", ["Maximilian"]),
    ("hi ", []),
    ("/rename Ma", []),
    ("/save chat lo", []),
    ("hi @Ma", ["@Marie", "@Maximilian"]),
    ("@max", ["@Maximilian"]),
    ("/msg bob see @b", ["@bob"]),
    ("/me waves at @Mari", ["@Marie"]),
    ("/send file b", ["bob"]),
    ("//shrug Ma", ["Marie", "Maximilian"]),
    ("/msg", []),
])
def test_completion(line: str, expected: list[str]) -> None:
    assert c.complete(line, NAMES) == expected


def test_paths_complete_after_send_file_name(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "Photos").mkdir()
    (tmp_path / "photo.jpg").write_text("x")
    (tmp_path / ".hidden").write_text("x")
    (tmp_path / "other").write_text("x")
    monkeypatch.chdir(tmp_path)
    assert c.complete("/send file bob ph", NAMES) == ["photo.jpg", "Photos/"]
    assert c.complete("/send file bob ", NAMES) == ["other", "photo.jpg", "Photos/"]
    assert c.complete("/send file bob .h", NAMES) == [".hidden"]
    assert c.complete(f"/send file bob {tmp_path}/Pho", NAMES) == \
        [f"{tmp_path}/photo.jpg", f"{tmp_path}/Photos/"]  # case-insensitive
    assert c.complete("/send file bob @x", NAMES) == []  # a path argument, not a mention
    assert c.complete("/send file bob missing/x", NAMES) == []
    monkeypatch.setenv("HOME", str(tmp_path))
    assert c.complete("/send file bob ~/oth", NAMES) == ["~/other"]


@pytest.mark.parametrize(("line", "frag"), [
    ("/ms", "/ms"), ("/msg Ma", "Ma"), ("/msg bob,Ma", "Ma"), ("hi ", ""), ("", ""),
])
def test_fragment_is_what_a_completion_replaces(line: str, frag: str) -> None:
    assert c.fragment(line) == frag


@pytest.mark.parametrize(("text", "expected"), [
    (None, None),
    ("", None),
    ("  \n\t ", None),
    ("lunch", "lunch"),
    ("  out   for\nlunch ", "out for lunch"),
    ("\x1b[2J\x07bell\x00", "[2J bell"),
    ("rtl\u202eoverride", "rtl override"),
    ("x" * 10_000, "x" * 200),
])
def test_clean_away_gives_one_bounded_printable_line(text: str | None,
                                                     expected: str | None) -> None:
    assert c.clean_away(text, 200) == expected
