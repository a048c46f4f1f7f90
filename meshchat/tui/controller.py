"""Carries out parsed commands against the node's public API and shows what happens.

One ``Controller`` per interface session. It keeps the *current room* (one at a time: joining
or hosting another room leaves the previous one), turns every error into one ``* error: ...``
line, and renders the node's events (``render``). Lines go to ``out`` as plain text, or to
``styled_out`` as prompt_toolkit fragments when the terminal interface wants colours.

Actions of this node are confirmed by the controller itself (its own messages, private messages,
broadcasts, renames, kicks, handoffs, closes); the node's events for the same actions are not
shown a second time.

No event stops the session: an event that cannot be shown is logged, counted
(``render_failures``) and replaced by one ``* error: could not show an event`` line. Every line
is cleaned of control characters on its way out, whatever produced it.

Joining a room (``/join``, ``--room``, or joining one again) shows what it said before we came,
under ``* ── N earlier messages ──``, then live messages. Room messages that arrive while the
join is under way are held and shown after that backlog, and none that the backlog showed is
shown twice (by sender fingerprint and sequence number).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import platform
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import meshchat
from meshchat import (
    PROTOCOL_VERSION,
    AmbiguousName,
    BroadcastReceived,
    CommandError,
    Event,
    HostChanged,
    JoinRefused,
    Limits,
    MemberRemoved,
    MeshchatError,
    Message,
    NotHost,
    Notice,
    NotInRoom,
    PeerDiscovered,
    PeerGone,
    PeerInfo,
    PeerJoined,
    PeerLeft,
    PeerNotFound,
    Renamed,
    RoomClosed,
    RoomInfo,
    RoomNotFound,
    RoomRenamed,
    Timeout,
)
from meshchat import commands as c
from meshchat.tui import render
from meshchat.tui.api import NodeAPI, RoomAPI
from meshchat.tui.render import Line

log = logging.getLogger("meshchat.tui")

_ADDRESS = re.compile(r"\[?([0-9A-Fa-f:.]+)\]?:(\d+)")
_OWN_LINE_MEMORY_S = 5.0
_HELD_EVENTS_MAX = 1000
"""Room messages held while a join is under way; beyond this they are shown at once."""


class _Refused(Exception):
    """A command that cannot run in the current situation; the text is shown as an error."""


class Controller:
    """Runs commands, renders events, tracks the current room."""

    def __init__(
        self,
        node: NodeAPI,
        out: Callable[[str], None],
        *,
        styled_out: Callable[[Line], None] | None = None,
        rooms_timeout_s: float = 1.0,
        now: Callable[[], float] = time.time,
        backlog_max: int = Limits().history_on_join,
    ) -> None:
        self.node = node
        self.room: RoomAPI | None = None
        self.quit_requested = False
        self.render_failures = 0
        """Events that could not be shown (each was logged and replaced by an error line)."""
        self._out = out
        self._styled_out = styled_out
        self._rooms_timeout_s = rooms_timeout_s
        self._now = now
        self._backlog_max = backlog_max
        self._events: AsyncIterator[Event] | None = None
        self._room_names: set[str] = set()
        self._listings: list[RoomInfo] = []
        self._history_seen: set[tuple[str, str, int]] = set()
        self._joining: str | None = None
        self._held: list[Event] = []
        self._own_changes: set[tuple[str, ...]] = set()
        self._own_lines: dict[str, float] = {}
        self._background: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ output

    def emit(self, line: Line) -> None:
        line = [(style, render.clean(text)) for style, text in line]
        if self._styled_out is not None:
            self._styled_out(line)
        else:
            self._out(render.plain(line))

    def say(self, text: str) -> None:
        """A system line (``* text``) that this controller produced."""
        self._own_lines[text] = self._now()
        self.emit(render.system(text))

    def error(self, text: str) -> None:
        self.emit(render.error(text))

    def view(self) -> render.View:
        return render.View(self.node.fingerprint, self._room_name(), self.names_clash)

    def _room_name(self) -> str | None:
        if self.room is None:
            return None
        try:
            return self.room.name
        except MeshchatError:
            return None

    def names_clash(self, name: str) -> bool:
        """Whether two known peers (this node included) go by ``name``."""
        folded = name.casefold()
        prints = {p.fingerprint for p in self._known_peers() if p.name.casefold() == folded}
        return len(prints) > 1

    def _known_peers(self) -> list[PeerInfo]:
        peers = [self.node.me, *self.node.peers()]
        if self.room is not None:
            with contextlib.suppress(MeshchatError):
                peers.extend(self.room.members)
        return peers

    def completion_names(self, before: str = "") -> list[str]:
        """Peer, member and room names for Tab completion (``name#fp4`` where names clash);
        after ``/join``, the rooms (``lobby#fp8`` where two rooms share a name)."""
        if self.wants_room(before):
            return self._join_choices()
        view = self.view()
        names = {render.shown_name(p, view) for p in self._known_peers()
                 if p.fingerprint != self.node.fingerprint}
        names.update(self._room_names)
        for room in self.node.joined_rooms():
            with contextlib.suppress(MeshchatError):
                names.add(room.name)
        # never put a peer's control characters into the input line
        return sorted((n for n in names if render.clean(n) == n), key=str.casefold)

    @staticmethod
    def wants_room(before: str) -> bool:
        """Whether the cursor is on the ROOM argument of ``/join`` in ``before``."""
        body = before.lstrip()
        if body.startswith("//"):
            body = body[1:]
        words = body.split()
        if not body.startswith("/") or not words or words[0][1:].lower() != "join":
            return False
        return len(words) == 1 or (len(words) == 2 and not body[-1].isspace())

    def _join_choices(self) -> list[str]:
        clashes = render.clashing_room_names(self._listings)
        choices = {render.room_ref(i, i.name in clashes) for i in self._listings}
        choices.update(n for n in self._room_names if n not in clashes)
        return sorted((n for n in choices if render.clean(n) == n), key=str.casefold)

    def prompt(self) -> Line:
        """``[lobby] alice> `` (the room part only inside a room)."""
        line: Line = []
        room = self._room_name()
        if room is not None:
            line.append(("class:room", f"[{render.clean(room)}] "))
        line += [(render.name_style(self.node.me), render.clean(self.node.name)), ("", "> ")]
        return line

    # ------------------------------------------------------------------ events

    def subscribe(self) -> None:
        """Start this session's event stream (call before anything that may cause events)."""
        if self._events is None:
            self._events = self.node.events()

    async def pump_events(self) -> None:
        """Show every event until cancelled."""
        self.subscribe()
        assert self._events is not None
        try:
            async for ev in self._events:
                self.show_event_safely(ev)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the event stream must not take the session down silently
            log.debug("event stream failed", exc_info=True)
            self.error(f"the event stream stopped: {exc}")

    def show_event_safely(self, ev: Event) -> None:
        """``show_event``; a failure is logged, counted and shown as one line, never raised."""
        try:
            self.show_event(ev)
        except Exception:
            self._render_failed(f"a {type(ev).__name__} event")

    def _render_failed(self, what: str) -> None:
        self.render_failures += 1
        log.warning("could not show %s (%d so far)", what, self.render_failures, exc_info=True)
        with contextlib.suppress(Exception):
            self.error("could not show an event (details in the log)")

    def show_event(self, ev: Event) -> None:
        if self._hold(ev):
            return
        self._track(ev)
        if self._hidden(ev):
            return
        line = render.event(ev, self.view())
        if line is not None:
            self.emit(line)

    def _hold(self, ev: Event) -> bool:
        """Keep a message of the room being joined until its backlog has been shown."""
        if self._joining is None or len(self._held) >= _HELD_EVENTS_MAX:
            return False
        if isinstance(ev, Message) and ev.room == self._joining and not ev.private:
            self._held.append(ev)
            return True
        return False

    def _release_held(self) -> None:
        held, self._held, self._joining = self._held, [], None
        for ev in held:
            self.show_event_safely(ev)

    def _track(self, ev: Event) -> None:
        current = self._room_name()
        match ev:
            case RoomClosed(room=room) if room == current:
                self.room = None
            case MemberRemoved(room=room, peer=peer) if (
                room == current and peer.fingerprint == self.node.fingerprint
            ):
                self.room = None

    def _hidden(self, ev: Event) -> bool:
        me = self.node.fingerprint
        match ev:
            case Message(sender=sender, room=room, seq=seq):
                if sender.fingerprint == me:
                    return True
                return room is not None and seq > 0 \
                    and (room, sender.fingerprint, seq) in self._history_seen
            case BroadcastReceived(sender=peer) | Renamed(peer=peer):
                return peer.fingerprint == me
            case PeerJoined(peer=peer) | PeerLeft(peer=peer):
                return peer.fingerprint == me
            case PeerDiscovered(peer=peer) | PeerGone(peer=peer):
                return peer.fingerprint == me
            case HostChanged(old=old):
                return old is not None and old.fingerprint == me
            case MemberRemoved(by=by):
                return by.fingerprint == me
            case RoomClosed(room=room):
                return self._take_own(("closed", room))
            case RoomRenamed(old=old_name, new=new_name):
                return self._take_own(("renamed", old_name, new_name))
            case Notice(text=text):
                said = self._own_lines.get(text)
                return said is not None and self._now() - said < _OWN_LINE_MEMORY_S
        return False

    def _take_own(self, key: tuple[str, ...]) -> bool:
        if key in self._own_changes:
            self._own_changes.discard(key)
            return True
        return False

    # ------------------------------------------------------------------ commands

    async def handle_line(self, line: str) -> None:
        """Parse and run one input line; every failure becomes one error line."""
        try:
            command = c.parse(line)
        except CommandError as exc:
            self.error(str(exc))
            return
        await self.run(command)

    async def run(self, command: c.Command) -> None:
        try:
            await self.execute(command)
        except asyncio.CancelledError:
            raise
        except _Refused as exc:
            self.error(str(exc))
        except MeshchatError as exc:
            if isinstance(exc, NotInRoom) and self.room is not None:
                self.room = None
            self.error(self._describe(exc, command))
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            self.error(f"{exc.strerror or exc}{where}")
        except Exception as exc:  # an interface never shows a traceback
            log.debug("command %r failed", command, exc_info=True)
            self.error(f"unexpected {type(exc).__name__}: {exc}")

    def _describe(self, exc: MeshchatError, command: c.Command) -> str:
        text = str(exc)
        match exc:
            case NotHost():
                action = c.spec_for(command.command).action if command.command else ""
                return f"only the host can {action or 'do that'}"
            case JoinRefused(reason="ambiguous") | AmbiguousName() if isinstance(command, c.Join):
                return self._ambiguous_room(command.room, text)
            case JoinRefused(reason=reason) if isinstance(command, c.Join):
                room = command.room
                return {
                    "banned": f"you are banned from {room}",
                    "locked": f"{room} is locked: nobody new can join",
                    "password": (f"wrong password for {room}" if command.password else
                                 f"{room} needs a password: /join {room} PASSWORD"),
                    "name": f"someone in {room} already has your name",
                }.get(reason, text)
            case RoomNotFound() if isinstance(command, c.Join):
                return f"no room {command.room} on the network (/rooms lists them)"
            case AmbiguousName():
                return f"{text} — use a fingerprint prefix"
            case PeerNotFound() | Timeout() | NotInRoom():
                return text or type(exc).__name__
        return text or type(exc).__name__

    def _ambiguous_room(self, ref: str, text: str) -> str:
        name = render.split_room_ref(ref)[0]
        listed = [i for i in render.sorted_rooms(self._listings) if i.name == name]
        if len({i.host_fingerprint for i in listed}) < 2:
            return f"{text} — /join {name}#FP picks one (FP: its host's fingerprint, /rooms)"
        choices = " or ".join(f"/join {render.room_ref(i, True)} (host {render.short(i.host)})"
                              for i in listed)
        return f"{len(listed)} rooms are called {name}: {choices}"

    def _need_room(self) -> RoomAPI:
        if self.room is None:
            raise _Refused("you are not in a room (/join ROOM or /host ROOM; /rooms lists them)")
        return self.room

    def _need_host(self) -> RoomAPI:
        room = self._need_room()
        if room.host.fingerprint != self.node.fingerprint:
            raise NotHost()
        return room

    def _ref(self, who: str) -> str:
        """What the node resolves: ``name#fp4`` → the fingerprint prefix; a member's IP:PORT."""
        _, sep, prefix = who.rpartition("#")
        if sep and len(prefix) >= 4:  # also "#fp": how a peer with no valid name is shown
            return prefix
        match = _ADDRESS.fullmatch(who)
        if match and self.room is not None:
            host, port = match.groups()
            for peer in self.room.members:
                if who in peer.addresses or (host in peer.addresses and self._has_port(peer, port)):
                    return peer.fingerprint
        return who

    def _has_port(self, peer: PeerInfo, port: str) -> bool:
        try:
            details = self.node.peer_details(peer.fingerprint)
        except MeshchatError:
            return False
        return port in {str(details.router_port), str(details.pub_port), str(details.card_port)}

    async def execute(self, command: c.Command) -> None:
        """Run one command; raises MeshchatError (and ``_Refused``) for the caller to show."""
        node = self.node
        match command:
            case c.Say(text=text):
                if not text.strip():
                    return
                room = self._need_room()
                await room.say(text)
                own = Message(room.name, node.me, text, False, self._now())
                self.emit(render.message(own, self.view()))
            case c.Msg(to=to, text=text):
                refs = [self._ref(w) for w in to]
                await node.msg(refs[0] if len(refs) == 1 else refs, text)
                self.emit(render.own_private(node.me, [self._peer_or_name(r) for r in refs],
                                             text, self._now(), self.view()))
            case c.Help(topic=topic):
                for text in c.help_for(topic) if topic else c.help_text():
                    self.emit(render.system(text))
            case c.Join(room=name, password=password):
                if self._is_current(name):
                    raise _Refused(f"you are already in {name}")
                self.say(f"joining {name}…")
                self._joining = render.split_room_ref(name)[0]
                try:
                    self._enter(await node.join(name, password))
                    self._show_joined()
                finally:
                    self._release_held()
            case c.Host(room=name, password=password):
                await self._open(name, password)
            case c.TestServer():
                self._enter(await node.host("test", None, announce=False))
                self.say("hosting room test (a local test server: not announced)")
            case c.Leave():
                room = self._need_room()
                name = room.name
                await room.leave()
                self.room = None
                self.say(f"you left {name}")
            case c.List():
                if self.room is None:
                    await self._show_rooms()
                else:
                    self._show_members(self.room)
            case c.Rooms():
                await self._show_rooms()
            case c.NewHost(who=who):
                room = self._need_room()
                await room.handoff(self._ref(who))
                new = room.host
                shown = render.shown_name(new, self.view()) if new.fingerprint != node.fingerprint \
                    else who
                self.say(f"{shown} is now the host of {room.name}")
            case c.NewRoomName(name=new_name):
                room = self._need_room()
                key: tuple[str, ...] = ("renamed", room.name, new_name)
                self._own_changes.add(key)
                try:
                    await room.rename(new_name)
                except BaseException:
                    self._own_changes.discard(key)
                    raise
                self.say(f"room {key[1]} is now called {new_name}")
            case c.NewPassword(password=password):
                room = self._need_room()
                await room.set_password(password)
                self.say(f"{room.name} now needs a password" if password
                         else f"{room.name} no longer needs a password")
            case c.MyColor(color=color):
                if color is None:
                    self.say(f"your colour is {node.color or 'the default'}"
                             f" (choose from {', '.join(c.COLOR_NAMES)} or #RRGGBB)")
                else:
                    result = node.set_color(color)
                    if inspect.isawaitable(result):
                        await result
                    self.say(f"your colour is now {color}")
            case c.Rename(name=new_name):
                await node.rename(new_name)
                self.say(f"you are now known as {new_name}")
            case c.Info(target=target):
                await self._info(target)
            case c.SendFile():
                self.say("file transfer is not available yet")
            case c.SaveChat(path=path):
                await self._save_chat(path)
            case c.Ping(target=target):
                await self._ping(target)
            case c.Version():
                self.say(f"meshchat {meshchat.__version__} (protocol {PROTOCOL_VERSION},"
                         f" Python {platform.python_version()})")
            case c.Uptime():
                self._uptime()
            case c.Broadcast(text=text):
                await node.broadcast(text)
                self.emit(render.broadcast(node.me, text, self.view()))
            case c.Kick(who=who, reason=reason) | c.Ban(who=who, reason=reason):
                room = self._need_room()
                ref = self._ref(who)
                found = self._peer_or_name(ref)
                banned = isinstance(command, c.Ban)
                await (room.ban(ref, reason) if banned else room.kick(ref, reason))
                removed = found if isinstance(found, PeerInfo) else PeerInfo(who, "")
                line = render.event(MemberRemoved(room.name, removed, node.me, reason or "",
                                                  banned), self.view())
                if line is not None:
                    self.emit(line)
            case c.Unban(who=who):
                room = self._need_room()
                await room.unban(self._ref(who))
                self.say(f"{who} is no longer banned from {room.name}")
            case c.Banned():
                room = self._need_host()
                bans = room.bans
                if not bans:
                    self.say(f"nobody is banned from {room.name}")
                for ban in bans:
                    reason = f": {render.clean(ban.reason)}" if ban.reason else ""
                    self.say(f"banned from {room.name}: {render.clean(ban.name)}"
                             f" ({ban.fingerprint}){reason}")
            case c.Users():
                room = self._need_host()
                members = room.members
                self.say(f"{len(members)} user{'' if len(members) == 1 else 's'}"
                         f" in {room.name}:")
                for peer in members:
                    self.say("  " + self._member_label(room, peer, full=True))
            case c.UserCount():
                room = self._need_host()
                count = len(room.members)
                self.say(f"{count} user{'' if count == 1 else 's'} in {room.name}")
            case c.Lock():
                room = self._need_room()
                await room.lock()
                self.say(f"{room.name} is locked: nobody new can join")
            case c.Unlock():
                room = self._need_room()
                await room.unlock()
                self.say(f"{room.name} is unlocked")
            case c.Close(room=named):
                room = self._need_room()
                name = room.name
                if named is not None and named != name:
                    raise _Refused(f"you can only close the room you are in ({name})")
                key = ("closed", name)
                self._own_changes.add(key)
                try:
                    await room.close()
                except BaseException:
                    self._own_changes.discard(key)
                    raise
                self.room = None
                self.say(f"you closed {name}")
            case c.Whoami():
                self._whoami()
            case c.Quit():
                self.quit_requested = True
                self.say("bye")

    # ------------------------------------------------------------------ startup

    async def startup(
        self,
        *,
        room: str | None = None,
        host: str | None = None,
        password: str | None = None,
        discovery_timeout_s: float = 2.0,
    ) -> None:
        """The first lines of a session, and the room of ``--room`` / ``--host``."""
        node = self.node
        self.say(f"you are {node.name} (fp {node.fingerprint[:8]}), reachable at {node.address}")
        if host is not None:
            await self.run(c.Host(host, password))
            return
        try:
            infos = await self._list_rooms(discovery_timeout_s)
        except MeshchatError as exc:
            self.error(str(exc))
            return
        if room is None:
            self.say(render.rooms_line(infos))
        elif render.matching_rooms(infos, room):
            await self.run(c.Join(room, password))
        elif render.split_room_ref(room)[1] is not None:
            name, prefix = render.split_room_ref(room)
            self.error(f"no room {name} hosted by {prefix}… on the network (/rooms lists them)")
        else:
            self.say(f"no room {room} on the network: hosting it")
            await self.run(c.Host(room, password))

    # ------------------------------------------------------------------ helpers

    def _enter(self, room: RoomAPI) -> None:
        """Make ``room`` current; the previous room is left in the background."""
        previous = self.room
        self.room = room
        self._history_seen = set()
        self._room_names.add(room.name)
        if previous is not None and previous is not room:
            task = asyncio.create_task(self._leave_quietly(previous))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _leave_quietly(self, room: RoomAPI) -> None:
        try:
            name = room.name
            await room.leave()
            self.say(f"you left {name}")
        except MeshchatError:
            pass

    async def _open(self, name: str, password: str | None) -> None:
        self._enter(await self.node.host(name, password))
        self.say(f"hosting room {name}" + (" (password protected)" if password else ""))

    def _is_current(self, ref: str) -> bool:
        current = self._room_name()
        if current is None or self.room is None:
            return False
        name, prefix = render.split_room_ref(ref)
        if ref == current:
            return True
        return prefix is not None and name == current \
            and self.room.host.fingerprint.lower().startswith(prefix)

    def _show_joined(self) -> None:
        room = self._need_room()
        view = self.view()
        members = ", ".join(render.shown_name(p, view) for p in room.members)
        self.say(f"joined {room.name} (host {render.shown_name(room.host, view)};"
                 f" members: {members})")
        self._show_backlog(room)

    def _show_backlog(self, room: RoomAPI) -> None:
        """The room's messages from before we joined, under one separator line."""
        history = list(room.history())
        shown = history[-self._backlog_max:] if self._backlog_max > 0 else []
        self._history_seen = {(m.room, m.sender.fingerprint, m.seq)
                              for m in shown if m.room is not None and m.seq > 0}
        if not shown:
            return
        self.emit(render.backlog(len(shown), len(history)))
        view = self.view()
        today = render.day(self._now())
        for msg in shown:
            try:
                self.emit(render.message(msg, view, today=today))
            except Exception:
                self._render_failed("an earlier message")

    async def _list_rooms(self, timeout_s: float) -> list[RoomInfo]:
        infos = list(await self.node.rooms(timeout=timeout_s))
        self._listings = infos
        self._room_names.update(i.name for i in infos)
        return infos

    async def _show_rooms(self) -> list[RoomInfo]:
        infos = await self._list_rooms(self._rooms_timeout_s)
        self.say(render.rooms_line(infos))
        return infos

    def _member_label(self, room: RoomAPI, peer: PeerInfo, *, full: bool = False) -> str:
        label = render.shown_name(peer, self.view())
        marks = []
        if peer.fingerprint == room.host.fingerprint:
            marks.append("host")
        if peer.fingerprint == self.node.fingerprint:
            marks.append("you")
        if full:
            marks.append(f"fp {peer.fingerprint[:8]}")
            if peer.addresses:
                marks.append(", ".join(peer.addresses))
        return label + (f" ({', '.join(marks)})" if marks else "")

    def _show_members(self, room: RoomAPI) -> None:
        members = room.members
        labels = ", ".join(self._member_label(room, p) for p in members)
        self.say(f"members of {room.name} ({len(members)}): {labels}")

    def _peer_or_name(self, who: str) -> PeerInfo | str:
        try:
            return self.node.resolve(who)
        except MeshchatError:
            return who

    def _whoami(self) -> None:
        node = self.node
        self.say(f"you are {node.name} (fp {node.fingerprint}), colour {node.color or 'default'},"
                 f" reachable at {node.address}")
        room = self.room
        where = "not in a room"
        if room is not None:
            role = " (you host it)" if room.host.fingerprint == node.fingerprint else ""
            where = f"in room {room.name}{role}"
        self.say(f"  {where}; up {render.duration(node.uptime())}; data in {node.data_dir}")

    async def _info(self, target: str | None) -> None:
        room = self.room
        if target is None or (room is not None and target == room.name):
            if room is None:
                self._whoami()
                return
            self._room_info(room)
            return
        ref = self._ref(target)
        try:
            details = self.node.peer_details(ref)
        except PeerNotFound:
            found = render.matching_rooms(await self._list_rooms(self._rooms_timeout_s), target)
            if not found:
                raise PeerNotFound(f"no peer or room called {target!r}") from None
            clash = len(found) > 1
            for info in render.sorted_rooms(found):
                self.say("room " + render.room_summary(info, clash))
            return
        peer = details.peer
        view = self.view()
        self.say(f"{render.shown_name(peer, view)} (fp {peer.fingerprint}),"
                 f" colour {peer.color or 'default'}")
        addresses = ", ".join(details.addresses) or "unknown"
        self.say(f"  addresses: {addresses}; ports: router {details.router_port or '-'},"
                 f" pub {details.pub_port or '-'}, card {details.card_port or '-'}")
        times = []
        if details.first_seen:
            times.append(f"first seen {render.timestamp(details.first_seen)}")
        if details.started_at:
            times.append(f"running since {render.timestamp(details.started_at)}")
        if room is not None:
            joined = self._joined_at(room, peer)
            if joined is not None:
                times.append(f"in {room.name} since {render.timestamp(joined)}")
        if times:
            self.say("  " + ", ".join(times))
        former = ", ".join(render.clean(n) for n in details.former_names)
        self.say(f"  former names: {former}" if former else "  no former names")

    def _joined_at(self, room: RoomAPI, peer: PeerInfo) -> float | None:
        details = room.info()
        for member, at in zip(details.members, details.joined_at, strict=False):
            if member.fingerprint == peer.fingerprint:
                return at
        return None

    def _room_info(self, room: RoomAPI) -> None:
        info = room.info()
        view = self.view()
        self.say(f"room {info.name}: host {render.shown_name(info.host, view)}, term {info.term},"
                 f" version {info.version}, created {render.timestamp(info.created_at)}")
        labels = ", ".join(self._member_label(room, p) for p in info.members)
        count = len(info.members)
        self.say(f"  {count} member{'' if count == 1 else 's'}: {labels}")
        self.say(f"  locked: {'yes' if info.locked else 'no'},"
                 f" password: {'yes' if info.has_password else 'no'}")

    async def _save_chat(self, path: str | None) -> None:
        room = self._need_room()
        name = room.name
        if path is None:
            stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(self._now()))
            safe = re.sub(r"[^\w.-]", "_", name)
            path = f"meshchat-{safe}-{stamp}.txt"
        view = render.View(self.node.fingerprint, name, self.names_clash)
        history = room.history()
        lines = [f"# meshchat: room {name}, saved {render.timestamp(self._now())}"]
        lines += [render.plain(render.message(m, view, full_date=True)) for m in history]
        target = await asyncio.to_thread(_write_text, path, "\n".join(lines) + "\n")
        self.say(f"saved {len(history)} message{'' if len(history) == 1 else 's'}"
                 f" of {name} to {target}")

    async def _ping(self, target: str | None) -> None:
        room = self.room
        if target is None:
            if room is None:
                raise _Refused("usage: /ping NAME|ROOM (outside a room, name whom)")
            target = room.name
        label = target
        ref = self._ref(target)
        if room is not None and target == room.name:
            host = room.host
            if host.fingerprint == self.node.fingerprint:
                raise _Refused(f"you host {room.name} yourself (/ping NAME pings a peer)")
            ref, label = host.fingerprint, f"{target} (host {render.shown_name(host, self.view())})"
        elif target in self._room_names and not self._is_peer(ref):
            found = render.matching_rooms(await self._list_rooms(self._rooms_timeout_s), target)
            if len(found) > 1:
                refs = ", ".join(render.room_ref(i, True) for i in render.sorted_rooms(found))
                raise _Refused(f"{len(found)} rooms are called {target}: /ping one of {refs}")
            for info in found:
                ref = info.host_fingerprint or info.host
                label = f"{target} (host {info.host})"
        rtt = await self.node.ping(ref)
        self.say(f"ping {label}: {rtt * 1000:.2f} ms")

    def _is_peer(self, ref: str) -> bool:
        try:
            self.node.resolve(ref)
        except MeshchatError:
            return False
        return True

    def _uptime(self) -> None:
        node = self.node
        parts = [f"up {render.duration(node.uptime())} (since {render.timestamp(node.started_at)})"]
        room = self.room
        if room is not None:
            info = room.info()
            parts.append(f"{info.name} open for {render.duration(self._now() - info.created_at)}")
            host = info.host
            if host.fingerprint != node.fingerprint:
                try:
                    started = self.node.peer_details(host.fingerprint).started_at
                except MeshchatError:
                    started = None
                if started:
                    parts.append(f"host {render.shown_name(host, self.view())} up"
                                 f" {render.duration(self._now() - started)}")
        self.say("; ".join(parts))


def _write_text(path: str, text: str) -> Path:
    target = Path(path).expanduser()
    target.write_text(text, encoding="utf-8")
    return target
