"""Helpers for the end-to-end network tests: ``meshchat start`` in line mode and API agents.

Each lab host runs one meshchat process. Two ways to drive one:

- ``Chat``: ``python -m meshchat start --no-tui`` — lines in on stdin, one line per event out
  (formats in ``meshchat.tui.linemode`` and ``meshchat.tui.render``).
- ``Agent``: ``tests/net/api_agent.py``, a node on the public API that takes JSON-line
  commands (its docstring has the table) and prints every event of its ``node.events()``.

Every wait has a deadline (``expect``-style): nothing here sleeps a fixed time to let something
happen. Deadlines are stretched by ``MESHCHAT_TEST_TIMEOUT_SCALE`` (see ``netlab.scaled``).
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshchat import Timings

from .netlab import ExpectError, Host, JsonProc, Proc, scaled, subset_match

FAST = Timings.fast()
DEFAULT = Timings()
ROOM = "lobby"
CLOCK = r"\d\d:\d\d:\d\d"

_YOU_ARE = re.compile(r"^\* you are (?P<name>.+) \(fp (?P<fp>[a-z2-7]{8})\), "
                      r"reachable at (?P<addr>[\d.]+):(?P<port>\d+)$")
_CHAT = re.compile(rf"^(?P<time>{CLOCK}) (?P<private>\[private\] )?(?:\[(?P<room>[^\]]+)\] )?"
                   r"<(?P<sender>[^>→]+?)(?: → (?P<to>[^>]+))?> (?P<text>.*)$")
_ROOM_INFO = re.compile(r"^\* room (?P<room>\S+): host (?P<host>\S+), term (?P<term>\d+), "
                        r"version (?P<version>\d+)")
_ROOM_MEMBERS = re.compile(r"^\*   (?P<count>\d+) members?: (?P<members>.*)$")
_PORTS = re.compile(r"ports: router (?P<router>\d+), pub (?P<pub>\d+), card (?P<card>\d+)")
_TROUBLE = ("Traceback (most recent call last)", "exception was never retrieved",
            "Exception in callback", "Error in atexit")


@dataclass(frozen=True)
class ChatLine:
    """One parsed chat line of line mode."""

    time: str
    sender: str
    text: str
    private: bool
    to: str | None
    room: str | None


def parse_chat(line: str) -> ChatLine | None:
    m = _CHAT.match(line)
    if m is None:
        return None
    return ChatLine(m["time"], m["sender"], m["text"], bool(m["private"]), m["to"], m["room"])


def split_members(text: str) -> list[str]:
    """``alice (host, you), bob, carol`` → its three items (commas in brackets kept)."""
    return re.split(r", (?![^(]*\))", text)


def lit(text: str) -> str:
    """``text`` as a regex that matches it literally."""
    return re.escape(text)


def chat_re(sender: str, text: str) -> str:
    """A regex for the room line ``HH:MM:SS <sender> text`` (exactly)."""
    return rf"^(?P<time>{CLOCK}) <{lit(sender)}> {lit(text)}$"


def deadline_in(seconds: float) -> float:
    return time.monotonic() + scaled(seconds)


def trouble(lines: Iterable[str]) -> list[str]:
    """Lines that show a crash: tracebacks and asyncio's unretrieved task exceptions."""
    return [line for line in lines if any(t in line for t in _TROUBLE)]


class _Driven:
    """What ``Chat`` and ``Agent`` share: a ``Proc`` with a name on a lab host."""

    def __init__(self, host: Host, name: str, proc: Proc) -> None:
        self.host = host
        self.name = name
        self.proc = proc

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} on {self.host.name}>"

    # the Proc surface tests use
    def expect(self, pattern: str | re.Pattern[str], timeout: float = 10.0) -> re.Match[str]:
        __tracebackhide__ = True
        return self.proc.expect(pattern, timeout)

    def expect_no(self, pattern: str, within: float = 2.0, until: str | None = None) -> None:
        __tracebackhide__ = True
        self.proc.expect_no(pattern, within, until)

    @property
    def lines(self) -> list[str]:
        return self.proc.lines

    def mark(self) -> int:
        """A position in stdout for ``wait_line(..., since=mark)`` and ``lines_since``."""
        return len(self.proc.lines)

    def lines_since(self, mark: int) -> list[str]:
        return self.proc.lines[mark:]

    def wait_line(self, pattern: str, timeout: float = 10.0, since: int = 0) -> re.Match[str]:
        """The first stdout line at or after ``since`` matching ``pattern``, waiting for it.

        Unlike ``expect`` this also finds lines printed before the cursor. The cursor ends up
        past the match, or stays where it was if the line had been printed already.
        """
        __tracebackhide__ = True
        regex = re.compile(pattern)
        end = time.monotonic() + scaled(timeout)
        scanned = since
        while True:
            lines = self.proc.lines
            for line in lines[scanned:]:
                m = regex.search(line)
                if m is not None:
                    return m
            scanned = max(scanned, len(lines))
            self.proc.cursor = scanned  # expect from here: every line before is checked
            left = end - time.monotonic()
            if left <= 0:
                raise ExpectError(self.proc.describe(
                    f"{self.name}: no line matching {pattern!r} since line {since} "
                    f"within {scaled(timeout):.1f}s"))
            try:
                return self.proc.expect(regex, timeout=left / scaled(1.0))
            except ExpectError:
                self._give_up_if_gone(f"a line matching {pattern!r}")

    def _give_up_if_gone(self, what: str) -> None:
        """After an ``expect`` failed: raise if the process is gone (no more lines will come),
        otherwise return so the caller checks once more and waits for the rest of its time."""
        __tracebackhide__ = True
        if self.proc.returncode is not None:
            raise ExpectError(self.proc.describe(f"{self.name} exited while waiting for {what}"))

    def kill(self) -> None:
        """``kill -9``."""
        self.proc.kill()

    def stop(self) -> None:
        self.proc.stop()

    def cont(self) -> None:
        self.proc.cont()

    def wait_exit(self, timeout: float = 10.0) -> int:
        __tracebackhide__ = True
        return self.proc.wait(timeout)

    def assert_no_trouble(self) -> None:
        """No traceback or unretrieved task exception on stderr (or stdout)."""
        __tracebackhide__ = True
        bad = trouble(self.proc.err_lines) + trouble(self.proc.lines)
        if bad:
            raise AssertionError(self.proc.describe(f"{self.name} printed a traceback: {bad[0]}"))


class Chat(_Driven):
    """``meshchat start --no-tui`` on a lab host, driven through stdin and stdout."""

    fp: str
    address: str
    card_port: int

    @classmethod
    def start(cls, host: Host, name: str, *args: str, fast: bool = True,
              discovery_timeout: float | None = 0.0, wait: bool = True) -> Chat:
        """Start a node; with ``wait``, until its first line (``* you are NAME …``).

        ``discovery_timeout`` 0 skips the start-up wait for rooms (joins and ``/rooms`` wait
        for discovery themselves); None keeps the CLI default (2 s).
        """
        argv = ["start", "--name", name, "--no-tui", "--interface", host.ifname]
        if discovery_timeout is not None:
            argv += ["--discovery-timeout", f"{discovery_timeout:g}"]
        if fast:
            argv.append("--fast-timings")
        chat = cls(host, name, host.spawn_meshchat(*argv, *args))
        if wait:
            chat.started()
        return chat

    def send(self, line: str) -> None:
        """One input line: a message or a /command."""
        __tracebackhide__ = True
        self.proc.send(line)

    def started(self, timeout: float = 15.0) -> Chat:
        __tracebackhide__ = True
        m = self.proc.expect(_YOU_ARE, timeout)
        self.fp = m["fp"]
        self.address = f"{m['addr']}:{m['port']}"
        self.card_port = int(m["port"])
        return self

    def say(self, text: str, timeout: float = 5.0) -> None:
        """Send a room line and wait for its echo (``HH:MM:SS <me> text``)."""
        __tracebackhide__ = True
        self.send(text)
        self.expect(rf"^{CLOCK} <{lit(self.name)}(#{self.fp[:4]})?> {lit(text)}$", timeout)

    def chat_lines(self, since: int = 0) -> list[ChatLine]:
        return [c for c in map(parse_chat, self.lines[since:]) if c is not None]

    def texts(self, since: int = 0, sender: str | None = None) -> list[str]:
        """Texts of the chat lines shown (room and private), in the order shown."""
        return [c.text for c in self.chat_lines(since) if sender is None or c.sender == sender]

    def wait_texts(self, texts: Iterable[str], timeout: float = 10.0, since: int = 0) -> None:
        """Wait until every one of ``texts`` was shown as a chat line (in any order)."""
        __tracebackhide__ = True
        wanted = set(texts)
        end = time.monotonic() + scaled(timeout)
        while True:
            missing = wanted - set(self.texts(since))
            if not missing:
                return
            left = end - time.monotonic()
            if left <= 0:
                shown = sorted(missing)[:10]
                raise ExpectError(self.proc.describe(
                    f"{self.name}: {len(missing)} of {len(wanted)} texts never shown "
                    f"within {scaled(timeout):.1f}s, e.g. {shown}"))
            pattern = "|".join(rf"> {lit(t)}$" for t in sorted(missing)[:50])
            self.proc.cursor = max(self.proc.cursor, since)
            try:
                self.proc.expect(pattern, timeout=left / scaled(1.0))
            except ExpectError:
                self._give_up_if_gone(f"texts {sorted(missing)[:5]}")

    def room_info(self, timeout: float = 5.0) -> RoomView:
        """``/info`` in a room: host, term, version and members (as shown)."""
        __tracebackhide__ = True
        self.send("/info")
        head = self.expect(_ROOM_INFO, timeout)
        members = self.expect(_ROOM_MEMBERS, timeout)
        names = [re.sub(r" \((?:host|you|host, you)\)$", "", part)
                 for part in split_members(members["members"])]
        return RoomView(head["room"], head["host"], int(head["term"]), int(head["version"]),
                        tuple(sorted(names)))

    def room_view(self, timeout: float = 5.0) -> tuple[str, tuple[str, ...]]:
        """``/list`` in a room: (host, sorted member names) as shown (one output line)."""
        __tracebackhide__ = True
        self.send("/list")
        m = self.expect(r"^\* (?:members of \S+ \(\d+\): (?P<members>.*)|error: .*)$", timeout)
        if m["members"] is None:
            return "", ()
        host, names = "", []
        for item in split_members(m["members"]):
            name, _, marks = item.partition(" (")
            if "host" in marks:
                host = name
            names.append(name)
        return host, tuple(sorted(names))

    def ping_ms(self, who: str, timeout: float = 5.0) -> float:
        """``/ping WHO``: the round trip shown, in milliseconds."""
        __tracebackhide__ = True
        self.send(f"/ping {who}")
        m = self.expect(rf"^\* (?:ping {lit(who)}: (?P<ms>[\d.]+) ms|error: .*)$", timeout)
        if m["ms"] is None:
            raise ExpectError(self.proc.describe(f"{self.name}: /ping {who}: {m[0]}"))
        return float(m["ms"])

    def ports(self, who: str, timeout: float = 5.0) -> dict[str, int]:
        """Router, pub and card port of ``who`` (this node too) from ``/info NAME``."""
        __tracebackhide__ = True
        self.send(f"/info {who}")
        m = self.expect(_PORTS, timeout)
        return {k: int(v) for k, v in m.groupdict().items()}

    def save_chat(self, path: Path, timeout: float = 5.0) -> list[str]:
        """``/save chat PATH``; the saved message lines (the header line dropped)."""
        __tracebackhide__ = True
        self.send(f"/save chat {path}")
        m = self.expect(rf"^\* saved (\d+) messages? of \S+ to {lit(str(path))}$", timeout)
        lines = path.read_text(encoding="utf-8").splitlines()
        assert lines and lines[0].startswith("# meshchat: room "), lines[:1]
        body = lines[1:]
        assert len(body) == int(m[1]), (m[0], len(body))
        return body

    def quit(self, timeout: float = 10.0) -> int:
        __tracebackhide__ = True
        self.send("/quit")
        self.expect(r"^\* bye$", timeout)
        return self.wait_exit(timeout)


@dataclass(frozen=True)
class RoomView:
    """What ``/info`` shows about the current room."""

    room: str
    host: str
    term: int
    version: int
    members: tuple[str, ...]


def open_room(hosts: Sequence[Host], names: Sequence[str], *extra: str, room: str = ROOM,
              fast: bool = True) -> list[Chat]:
    """The first name hosts ``room``; the others join it in the order given.

    Every member has seen every later join before this returns, so join order (the order
    of succession) is the order of ``names``.
    """
    first = Chat.start(hosts[0], names[0], "--host", room, *extra, fast=fast)
    first.expect(rf"^\* hosting room {lit(room)}$")
    others = [Chat.start(h, n, *extra, fast=fast, wait=False)
              for h, n in zip(hosts[1:], names[1:], strict=True)]
    members = [first]
    for chat in others:
        chat.started()
        chat.send(f"/join {room}")
        chat.expect(rf"^\* joined {lit(room)} \(host {lit(names[0])}; members: ")
        for earlier in members:
            earlier.wait_line(rf"^\* {lit(chat.name)}(#{chat.fp[:4]})? joined {lit(room)}$")
        members.append(chat)
    return members


def wait_same(chats: Sequence[Chat], what: str, probe: Any, timeout: float = 15.0,
              until: Any = None) -> Any:
    """Ask every chat ``probe(chat)`` until all answers are equal (and, with ``until``, the
    answer passes ``until(answer)``); that answer.

    Each round waits for the answers themselves (``/list`` and the like): a poll with a
    deadline for states that converge (a merge, a failover), not a fixed sleep.
    """
    __tracebackhide__ = True
    end = time.monotonic() + scaled(timeout)
    while True:
        answers = [probe(c) for c in chats]
        if all(a == answers[0] for a in answers) and (until is None or until(answers[0])):
            return answers[0]
        if time.monotonic() > end:
            shown = "\n".join(f"  {c.name}: {a}" for c, a in zip(chats, answers, strict=True))
            stories = "\n".join(f"  {c.name}, what it printed last:\n{story(c)}" for c in chats)
            raise AssertionError(
                f"{what} never agreed within {scaled(timeout):.1f}s:\n{shown}\n{stories}")
        time.sleep(0.2)  # pacing between probes; each probe itself waits for its answer


PROBE_LINES = re.compile(r"^\* (members of |room \S+: |  |saved \d+ messages? |rooms: )")


def story(chat: _Driven, n: int = 25) -> str:
    """The last ``n`` output lines of ``chat`` that are not answers to probes."""
    lines = [line for line in chat.lines if not PROBE_LINES.match(line)][-n:]
    return "\n".join(f"    | {line}" for line in lines)


def all_trouble_free(*drivens: _Driven) -> None:
    __tracebackhide__ = True
    for d in drivens:
        d.assert_no_trouble()


# --------------------------------------------------------------------------- what a node holds


def python_pid(driven: _Driven) -> int:
    """The pid of the Python process behind ``driven``: ``ip netns exec`` and ``setpriv`` exec
    into it, so it is the Popen's pid (checked)."""
    pid = driven.proc.pid
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert Path(os.fsdecode(argv[0])).name.startswith("python"), (pid, argv[:3])
    return pid


def rss_kb(driven: _Driven) -> int:
    """Resident memory of the node's process (``VmRSS`` of /proc/PID/status), in KiB."""
    for line in Path(f"/proc/{python_pid(driven)}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {driven}")


def open_fds(driven: _Driven) -> int:
    """How many file descriptors the node's process holds open (/proc/PID/fd)."""
    return len(os.listdir(f"/proc/{python_pid(driven)}/fd"))


# --------------------------------------------------------------------------- API agents


class AgentError(AssertionError):
    """The agent answered an error where a value was expected."""


@dataclass(frozen=True)
class Failure:
    """An error the agent answered: ``kind`` (the exception class name), its message, and
    ``reason`` (``JoinRefused.reason``; None for other errors)."""

    kind: str
    message: str
    reason: str | None


class _JsonDriven(_Driven):
    """What ``Agent`` and ``Hostile`` share: commands and replies as JSON lines (``agent_io``)."""

    proc: JsonProc

    def request(self, cmd: str, timeout: float = 10.0, background: bool = False,
                **args: Any) -> dict[str, Any]:
        """Send a command; its reply object (``ok``, ``value`` or ``error``...)."""
        __tracebackhide__ = True
        ident = next(_request_ids)
        message: dict[str, Any] = {"id": ident, "cmd": cmd, **args}
        if background:
            message["background"] = True
        self.proc.send_json(message)
        return self.proc.wait_json({"ev": "reply", "id": ident}, timeout=timeout, take=True)

    def call(self, cmd: str, timeout: float = 10.0, **args: Any) -> Any:
        """Run a command of the agent; its value. Raises ``AgentError`` if it failed."""
        __tracebackhide__ = True
        reply = self.request(cmd, timeout, **args)
        if not reply["ok"]:
            raise AgentError(self.proc.describe(
                f"{self.name}: {cmd} {args} raised {reply['error']}: {reply['message']}"))
        return reply["value"]

    def fails(self, cmd: str, timeout: float = 10.0, **args: Any) -> Failure:
        """Run a command that must raise; what it raised."""
        __tracebackhide__ = True
        reply = self.request(cmd, timeout, **args)
        if reply["ok"]:
            raise AssertionError(self.proc.describe(
                f"{self.name}: {cmd} {args} returned {reply['value']!r} instead of raising"))
        return Failure(reply["error"], reply["message"], reply.get("reason"))

    def mark(self) -> int:
        """A position among the agent's output objects, for ``since=``."""
        return self.proc.json_mark()

    def close(self, timeout: float = 10.0) -> None:
        """End of input: the agent shuts down, prints ``closed`` and exits."""
        __tracebackhide__ = True
        self.proc.close_stdin()
        self.proc.wait_json({"ev": "closed"}, timeout=timeout)
        self.wait_exit(timeout)


class Agent(_JsonDriven):
    """A node on meshchat's public API (``tests/net/api_agent.py``) on a lab host.

    ``call(cmd, **args)`` runs one command of the agent's table and returns its value (JSON);
    ``fails(cmd, **args)`` runs one that must raise. ``wait_event(since, **want)`` waits for an
    event of the agent's ``node.events()`` (``mark()`` before the action that causes it).
    """

    fp: str
    peer_id: bytes
    ports: dict[str, int]

    @classmethod
    def start(cls, host: Host, name: str, *extra: str, fast: bool = True,
              timeout: float = 15.0) -> Agent:
        """Start the agent (``extra``: more ``api_agent`` options, e.g. ``--peer``) and wait
        until its node is up."""
        __tracebackhide__ = True
        args = ["--name", name, "--interface", host.ifname, *extra]
        if fast:
            args.append("--fast")
        agent = cls(host, name, host.spawn_module("tests.net.api_agent", *args, kind=JsonProc))
        ready = agent.proc.wait_json({"ev": "ready"}, timeout=timeout)
        agent.fp = ready["fingerprint"]
        agent.peer_id = bytes.fromhex(ready["peer_id"])
        agent.ports = dict(ready["ports"])
        return agent

    def stats(self) -> dict[str, int]:
        """The node's counters (``node.stats``: ``dropped_<reason>`` and the like)."""
        __tracebackhide__ = True
        stats: dict[str, int] = self.call("stats")
        return stats

    def member_names(self) -> list[str]:
        """Names of the current room's members, in join order."""
        return [p["name"] for p in self.call("room")["members"]]

    def events(self, since: int = 0, stream: int = 0) -> list[dict[str, Any]]:
        """Every event of ``stream`` printed since ``since`` (a ``mark()``), decoded."""
        return [o["event"] for o in self.proc.objects[since:]
                if o.get("ev") == "event" and o.get("stream") == stream]

    def wait_event(self, since: int = 0, timeout: float = 10.0, stream: int = 0,
                   **want: Any) -> dict[str, Any]:
        """The first event of ``stream`` since ``since`` whose fields include ``want``
        (``type=...`` too). A dict matches a nested object by its items (``sender={"name":
        "bob"}``)."""
        __tracebackhide__ = True
        found = self.proc.wait_json({"ev": "event", "stream": stream, "event": want},
                                    since=since, timeout=timeout)
        event: dict[str, Any] = found["event"]
        return event


_request_ids = itertools.count(1)
_nonces = itertools.count(int(time.time() * 1000) % 10**9 * 1000)


# --------------------------------------------------------------------------- hostile peers


def wire_json(value: Any) -> Any:
    """Python values as the hostile agent's JSON: bytes → ``{"hex": ...}``, tuples → lists."""
    if isinstance(value, bytes | bytearray):
        return {"hex": bytes(value).hex()}
    if isinstance(value, list | tuple):
        return [wire_json(v) for v in value]
    if isinstance(value, dict):
        return {k: wire_json(v) for k, v in value.items()}
    return value


def _as_reported(value: Any) -> Any:
    """Python values as the agent reports them (bytes as plain hex), for matching."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {k: _as_reported(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_as_reported(v) for v in value]
    return value


def _hex(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


def card_address(target: Chat | Agent | str) -> str:
    """The card server address (``IP:PORT``, what ``--peer`` takes) of a node in the lab."""
    if isinstance(target, str):
        return target
    if isinstance(target, Agent):
        return f"{target.host.addr}:{target.ports['card']}"
    return target.address


class Hostile(_JsonDriven):
    """A hostile peer (``tests/net/hostile_agent.py``) on a lab host: its own key, real sockets,
    any message with any field values. The agent's docstring has its commands and the JSON forms
    of field values; this wrapper takes Python values (bytes as bytes)::

        evil = Hostile.start(lab.hosts[2])
        target = evil.connect(alice)                      # a Chat, an Agent or "IP:PORT"
        mark = evil.mark()
        evil.send("Ping", {"nonce": 2**64 - 1})
        evil.wait_received("Pong", since=mark, nonce=2**64 - 1)
        evil.send("Heads", {...}, raw=True, seq=2**64 - 1)     # raw: no codec check
        evil.send_envelope("ping", ["not an int"])              # any tag, any body
        evil.send_raw(os.urandom(100))
        evil.publish_sealed(room_id, epoch, key, "Chat", {"batch": {"signed": {...}}})

    ``to`` defaults to the peer of the last ``connect``. What it receives is reported as
    ``received`` objects: ``received()``/``wait_received()`` match on the message's fields
    (``where`` on the other keys: ``kind``, ``from``, ``opened``, ``inner``...).
    """

    peer_id: bytes
    fp: str
    address: str
    router_port: int
    pub_port: int
    target: dict[str, Any]

    @classmethod
    def start(cls, host: Host, name: str = "mallory", seed: bytes | None = None,
              timeout: float = 15.0) -> Hostile:
        __tracebackhide__ = True
        args = ["--name", name, "--bind", host.addr]
        if seed is not None:
            args += ["--seed", seed.hex()]
        evil = cls(host, name, host.spawn_module("tests.net.hostile_agent", *args,
                                                 kind=JsonProc))
        ready = evil.proc.wait_json({"ev": "ready"}, timeout=timeout)
        evil.peer_id = bytes.fromhex(ready["peer_id"])
        evil.fp = ready["fingerprint"]
        evil.address = ready["address"]
        evil.router_port = int(ready["router_port"])
        evil.pub_port = int(ready["pub_port"])
        return evil

    # -- connecting ----------------------------------------------------------------------

    def connect(self, target: Chat | Agent | str, hello: bool = True) -> dict[str, Any]:
        """Fetch the target's card from its card server and connect to its ROUTER and PUB; with
        ``hello`` also say Hello, so it connects back (and gets what we publish). The card."""
        __tracebackhide__ = True
        self.target = self.call("connect", card=card_address(target), hello=hello)
        return self.target

    def connect_to(self, peer_id: bytes, address: str, router_port: int, pub_port: int,
                   hello: bool = True) -> dict[str, Any]:
        """Connect to a peer by what its heartbeat says (no card server involved)."""
        __tracebackhide__ = True
        self.target = self.call("connect", peer_id=peer_id.hex(), address=address,
                                router_port=router_port, pub_port=pub_port, hello=hello)
        return self.target

    # -- sending -------------------------------------------------------------------------

    def hello(self, to: bytes | None = None, fields: dict[str, Any] | None = None) -> bool:
        """Our Hello (card, ...; ``fields`` override) over our DEALER."""
        __tracebackhide__ = True
        return bool(self.call("hello", to=_hex(to), fields=wire_json(fields or {}))["sent"])

    def send(self, type: str, fields: dict[str, Any] | list[Any] | None = None, *,
             to: bytes | None = None, raw: bool = False, sender: bytes | None = None,
             seq: int | None = None, sent_at: float | None = None,
             version: Any = None) -> bool:
        """A message of ``type`` (class name or tag) over our DEALER; whether it was queued."""
        __tracebackhide__ = True
        return bool(self.call("send", type=type, fields=wire_json(fields or {}), to=_hex(to),
                              raw=raw, sender=_hex(sender), seq=seq, sent_at=sent_at,
                              version=version)["sent"])

    def send_many(self, type: str, fields: Sequence[dict[str, Any]], *,
                  to: bytes | None = None, raw: bool = False, sender: bytes | None = None,
                  sent_at: float | None = None) -> int:
        """One message of ``type`` per item of ``fields``, in one command (a flood); how many
        were queued."""
        __tracebackhide__ = True
        return int(self.call("send_many", type=type, fields=wire_json(list(fields)), to=_hex(to),
                             raw=raw, sender=_hex(sender), sent_at=sent_at)["sent"])

    def publish_junk(self, room_id: bytes, count: int, size: int = 200) -> None:
        """``count`` Sealed frames on the room's topic, each under a random epoch."""
        __tracebackhide__ = True
        self.call("publish_junk", room_id=room_id.hex(), count=count, size=size, timeout=30.0)

    def send_envelope(self, tag: str, body: list[Any], *, to: bytes | None = None,
                      sender: bytes | None = None, seq: Any = 1, sent_at: Any = 0.0,
                      version: Any = None) -> bool:
        """An envelope made by hand: any tag, any body, any header values."""
        __tracebackhide__ = True
        return bool(self.call("send_envelope", tag=tag, body=wire_json(body), to=_hex(to),
                              sender=_hex(sender), seq=seq, sent_at=sent_at,
                              version=version)["sent"])

    def send_raw(self, frame: bytes, to: bytes | None = None) -> bool:
        """Bytes that need not be a frame at all."""
        __tracebackhide__ = True
        return bool(self.call("send_raw", frame=frame.hex(), to=_hex(to))["sent"])

    def publish(self, type: str, fields: dict[str, Any] | list[Any] | None = None, *,
                topic: str | None = None, room_id: bytes | None = None, raw: bool = False,
                sender: bytes | None = None, seq: int | None = None,
                sent_at: float | None = None, version: Any = None) -> None:
        """On our PUB (topic from the type for presence and broadcast; ``room_id``: the
        room's topic)."""
        __tracebackhide__ = True
        self.call("publish", type=type, fields=wire_json(fields or {}), topic=topic,
                  room_id=_hex(room_id), raw=raw, sender=_hex(sender), seq=seq,
                  sent_at=sent_at, version=version)

    def publish_raw(self, frame: bytes, *, topic: str | None = None,
                    room_id: bytes | None = None) -> None:
        __tracebackhide__ = True
        self.call("publish_raw", frame=frame.hex(), topic=topic, room_id=_hex(room_id))

    def publish_sealed(self, room_id: bytes, epoch: int, key: bytes | None = None,
                       type: str | None = None, fields: dict[str, Any] | None = None, *,
                       inner: bytes | None = None, raw: bool = False,
                       sender: bytes | None = None, seq: int | None = None,
                       sent_at: float | None = None) -> None:
        """A room payload sealed with ``key`` (default: the key ring's for that epoch)."""
        __tracebackhide__ = True
        self.call("publish_sealed", room_id=room_id.hex(), epoch=epoch, key=_hex(key),
                  type=type, fields=wire_json(fields or {}), inner=_hex(inner), raw=raw,
                  sender=_hex(sender), seq=seq, sent_at=sent_at)

    def heartbeat(self, every: float | None = None,
                  fields: dict[str, Any] | None = None) -> None:
        """Publish our Heartbeat once, or every ``every`` seconds (0 stops); ``fields``
        override its fields (``hosted``: rooms we claim to host...)."""
        __tracebackhide__ = True
        self.call("heartbeat", every=every, fields=wire_json(fields or {}))

    def add_key(self, room_id: bytes, epoch: int, key: bytes) -> None:
        __tracebackhide__ = True
        self.call("add_key", room_id=room_id.hex(), epoch=epoch, key=key.hex())

    def mute(self, *types: str) -> None:
        """Stop reporting these types (``"Heartbeat"``, ``"undecodable"``...)."""
        __tracebackhide__ = True
        self.call("mute", types=list(types))

    def unmute(self, *types: str) -> None:
        __tracebackhide__ = True
        self.call("unmute", types=list(types))

    def stats(self) -> dict[str, Any]:
        __tracebackhide__ = True
        stats: dict[str, Any] = self.call("stats")
        return stats

    def twin(self, on: bool = True) -> bytes:
        """Speak as our twin id from now on (``on=False``: as ourselves); the id spoken as."""
        __tracebackhide__ = True
        return bytes.fromhex(self.call("twin", on=on)["peer_id"])

    def sync(self, to: bytes | None = None, timeout: float = 5.0) -> float:
        """A Ping and its Pong over our DEALER: the target has read every direct frame we sent
        before it (one connection keeps order). The round trip in seconds."""
        __tracebackhide__ = True
        nonce = next(_nonces)
        mark = self.mark()
        started = time.monotonic()
        self.send("Ping", {"nonce": nonce}, to=to)
        self.wait_received("Pong", since=mark, timeout=timeout, nonce=nonce)
        return time.monotonic() - started

    def hosted_room(self, host: bytes, name: str | None = None,
                    timeout: float = 10.0) -> dict[str, Any]:
        """The room ``host`` says it hosts in its heartbeat (``room_id`` as bytes)."""
        __tracebackhide__ = True

        def hosts(report: dict[str, Any]) -> bool:
            return any(name is None or r["name"] == name for r in report["fields"]["hosted"])

        beat = self.wait_received("Heartbeat", where={"from": host.hex()}, test=hosts,
                                  timeout=timeout)
        room = next(r for r in beat["fields"]["hosted"] if name is None or r["name"] == name)
        return {**room, "room_id": bytes.fromhex(room["room_id"])}

    def join_room(self, room_id: bytes, name: str = "mallory", *, to: bytes | None = None,
                  merge_token: bytes = b"", sender: bytes | None = None,
                  timeout: float = 5.0) -> dict[str, Any]:
        """A JoinRequest made by hand; the host's answer (JoinAccept, JoinChallenge or
        JoinRefusal report). A JoinAccept's key is in ``opened.sealed_key`` and the key ring."""
        __tracebackhide__ = True
        rid = next(_nonces)
        mark = self.mark()
        self.send("JoinRequest", {"room_id": room_id, "name": name, "request_id": rid,
                                  "challenge": b"", "proof": b"", "merge_token": merge_token},
                  to=to, sender=sender)
        return self.proc.wait_json(
            lambda o: o.get("ev") == "received"
            and o.get("type") in ("JoinAccept", "JoinChallenge", "JoinRefusal")
            and o["fields"].get("request_id") == rid, since=mark, timeout=timeout)

    def readable(self, since: int = 0) -> list[str]:
        """Every chat text we could open in room traffic since ``since``: what leaked."""
        texts = []
        for report in self.received("Sealed", since):
            batch = report.get("inner", {}).get("opened", {}).get("batch", {})
            texts += [line["text"] for line in batch.get("lines", [])]
        return texts

    # -- receiving -----------------------------------------------------------------------

    def received(self, type: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        """Every frame reported since ``since`` (a ``mark()``), of ``type`` if given."""
        return [o for o in self.proc.objects[since:]
                if o.get("ev") == "received" and (type is None or o.get("type") == type)]

    def wait_published_by(self, peer_id: bytes, since: int = 0, timeout: float = 10.0
                          ) -> dict[str, Any]:
        """The first publication from ``peer_id``: its PUB has dialled ours and our
        subscriptions reached it (a peer publishes to us only once it has learnt our card and
        its connection is up; what it published before that never reached us)."""
        __tracebackhide__ = True
        return self.proc.wait_json(
            lambda o: o.get("ev") == "received" and o.get("kind") == "pub"
            and o.get("from") == peer_id.hex(), since=since, timeout=timeout)

    def wait_received(self, type: str, since: int = 0, timeout: float = 10.0,
                      where: dict[str, Any] | None = None,
                      test: Callable[[dict[str, Any]], bool] | None = None,
                      **fields: Any) -> dict[str, Any]:
        """The first ``type`` message since ``since`` whose fields include ``fields`` (bytes
        given as bytes), whose report includes ``where`` and passes ``test(report)``."""
        __tracebackhide__ = True
        want = {"ev": "received", "type": type, "fields": _as_reported(fields),
                **_as_reported(where or {})}
        return self.proc.wait_json(
            lambda o: subset_match(o, want) and (test is None or test(o)),
            since=since, timeout=timeout)
