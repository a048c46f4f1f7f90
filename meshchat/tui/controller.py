"""Carries out parsed commands against the node's public API and shows what happens.

One ``Controller`` per interface session. It keeps the *current room*: in line mode one at a
time (joining or hosting another room leaves the previous one); with ``keep_rooms`` (the
terminal interface) the rooms joined before stay joined, and ``/join`` of one of them, or
``step_room``, makes it current again (``rooms``). It turns every error into one ``* error: ...``
line, and renders the node's events (``render``). Lines go to ``out`` as plain text, or to
``styled_out`` as prompt_toolkit fragments when the terminal interface wants colours.

Actions of this node are confirmed by the controller itself (its own messages, private messages,
broadcasts, renames, kicks, handoffs, closes); the node's events for the same actions are not
shown a second time (``gate``).

No event stops the session: an event that cannot be shown is logged, counted
(``render_failures``) and replaced by one ``* error: could not show an event`` line. Every line
is cleaned of control characters on its way out, whatever produced it.

Joining a room (``/join``, ``--room``, or joining one again) shows what it said before we came,
under ``* ── N earlier messages ──``, then live messages. Room messages that arrive while the
join is under way are held and shown after that backlog, and none that the backlog showed is
shown twice (by sender fingerprint and sequence number).

What the reporting commands print is in ``reports``; what a typed name or address refers to,
and what Tab offers, in ``lookup``; ``/info``, ``/whoami``, ``/ping`` and ``/save chat`` run
in ``queries``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import platform
import time
from collections.abc import AsyncIterator, Callable
from typing import cast

import meshchat
from meshchat import (
    PROTOCOL_VERSION,
    AwayChanged,
    CommandError,
    Event,
    Limits,
    MemberRemoved,
    MeshchatError,
    Message,
    NotHost,
    NotInRoom,
    PeerInfo,
    RoomClosed,
    RoomInfo,
)
from meshchat import commands as c
from meshchat.tui import lookup, queries, render, reports, rooms, transfers
from meshchat.tui.api import NodeAPI, RoomAPI
from meshchat.tui.gate import EventGate
from meshchat.tui.queries import Refused as _Refused
from meshchat.tui.render import Line

log = logging.getLogger("meshchat.tui")
_MAX_TALKED = 1024  # private partners whose away changes are shown


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
        on_event: Callable[[Event], None] | None = None,
        alert: Callable[[], None] | None = None,
        clear: Callable[[], None] | None = None,
        keep_rooms: bool = False,
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
        self._gate = EventGate(now)
        self._background: set[asyncio.Task[None]] = set()
        self._transfer_lines = transfers.TransferLines()
        self._on_event = on_event
        # Fingerprints we exchanged private messages with (newest last, bounded): their away
        # changes are shown, as are those of members of our rooms; nobody else's.
        self._talked: dict[str, None] = {}
        self._alert = alert
        self._clear = clear
        self.bell = True
        """Whether a mention of my name or a private message calls ``alert`` (``/bell``)."""
        self.keep_rooms = keep_rooms
        self._rooms = rooms.Rooms()
        self._ended: RoomAPI | None = None  # the current room, just ended by an event

    # ------------------------------------------------------------------ output

    def emit(self, line: Line) -> None:
        if self._styled_out is not None:  # a message's own lines stay lines here
            self._styled_out([(style, render.clean_lines(text) if style == render.TEXT_STYLE
                               else render.clean(text)) for style, text in line])
        else:
            self._out(render.plain([(style, render.clean(text)) for style, text in line]))

    def say(self, text: str) -> None:
        """A system line (``* text``) that this controller produced."""
        self._gate.said(text)
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
        return lookup.names_clash(self.node, self.room, name)

    def completion_names(self, before: str = "") -> list[str]:
        """Peer, member and room names for Tab completion (``name#fp4`` where names clash);
        after ``/join``, the rooms (``lobby#fp8`` where two rooms share a name)."""
        if self.wants_room(before):
            return lookup.join_choices(self._listings, self._room_names)
        return lookup.peer_and_room_names(self.node, self.room, self.view(), self._room_names)

    @staticmethod
    def wants_room(before: str) -> bool:
        """Whether the cursor is on the ROOM argument of ``/join`` in ``before``."""
        return lookup.wants_room(before)

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
            shown = 0
            async for ev in self._events:
                self.show_event_safely(ev)
                shown += 1
                if shown % 32 == 0:  # a burst of events lets keys and redraws in between
                    await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the event stream must not take the session down silently
            log.debug("event stream failed", exc_info=True)
            self.error(f"the event stream stopped: {exc}")

    def show_event_safely(self, ev: Event) -> None:
        """``show_event``; a failure is logged, counted and shown as one line, never raised."""
        try:
            if self._on_event is not None:
                self._on_event(ev)
            self.show_event(ev)
            self._fall_back()
        except Exception:
            self._render_failed(f"a {type(ev).__name__} event")

    def _render_failed(self, what: str) -> None:
        self.render_failures += 1
        log.warning("could not show %s (%d so far)", what, self.render_failures, exc_info=True)
        with contextlib.suppress(Exception):
            self.error("could not show an event (details in the log)")

    def show_event(self, ev: Event) -> None:
        if self._gate.hold(ev):
            return
        self._track(ev)
        if self._gate.hidden(ev, self.node.fingerprint):
            return
        if isinstance(ev, AwayChanged) and not self._near(ev.peer):
            return
        if transfers.transfer_event(ev):  # issue 7: offers and progress lines
            text = self._transfer_lines.line(ev)
            if text is not None:
                self.emit(render.system(text))
            return
        line = render.event(ev, self.view())
        if line is None:
            return
        if isinstance(ev, Message) and ev.private:
            self._talked_with([ev.sender])
        if isinstance(ev, Message) and ev.sender.fingerprint != self.node.fingerprint \
                and not ev.auto:  # an away reply answers what I just sent: no bell
            mentioned = not ev.private and render.mentions(ev.text, self.node.name)
            if mentioned:
                line = render.highlight(line)
            if (mentioned or ev.private) and self.bell and self._alert is not None:
                self._alert()
        self.emit(line)

    def _near(self, peer: PeerInfo) -> bool:
        """Whether a change of ``peer``'s away text is worth a line: a member of a room we
        are in, or someone we exchanged private messages with. On a LAN of a hundred, the
        rest would be noise (IRC's away-notify also tells only of users in shared channels)."""
        fp = peer.fingerprint
        if fp in self._talked:
            return True
        rooms = list(self.node.joined_rooms())
        if self.room is not None:
            rooms.append(self.room)
        return any(m.fingerprint == fp for room in rooms for m in room.members)

    def _talked_with(self, peers: list[PeerInfo]) -> None:
        for peer in peers:
            if peer.fingerprint:
                self._talked.pop(peer.fingerprint, None)
                self._talked[peer.fingerprint] = None
        while len(self._talked) > _MAX_TALKED:
            del self._talked[next(iter(self._talked))]

    def _release_held(self) -> None:
        for ev in self._gate.release():
            self.show_event_safely(ev)

    def _track(self, ev: Event) -> None:
        current = self._room_name()
        match ev:
            case RoomClosed(room=room) if room == current:
                self._ended, self.room = self.room, None
            case MemberRemoved(room=room, peer=peer) if (
                room == current and peer.fingerprint == self.node.fingerprint
            ):
                self._ended, self.room = self.room, None

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
                self._ended, self.room = self.room, None
            self.error(reports.describe_error(exc, command, self._listings))
            self._fall_back()
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            self.error(f"{exc.strerror or exc}{where}")
        except Exception as exc:  # an interface never shows a traceback
            log.debug("command %r failed", command, exc_info=True)
            self.error(f"unexpected {type(exc).__name__}: {exc}")

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
        """What the node resolves for ``who`` (``lookup.peer_ref``)."""
        return lookup.peer_ref(self.node, self.room, who)

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
            case c.Me(text=text):
                room = self._need_room()
                await room.say(text, action=True)
                own = Message(room.name, node.me, text, False, self._now(), action=True)
                self.emit(render.message(own, self.view()))
            case c.Msg(to=to, text=text):
                refs = [self._ref(w) for w in to]
                await node.msg(refs[0] if len(refs) == 1 else refs, text)
                targets = [lookup.peer_or_name(node, r) for r in refs]
                self._talked_with([t for t in targets if isinstance(t, PeerInfo)])
                self.emit(render.own_private(node.me, targets, text, self._now(), self.view()))
            case c.Help(topic=topic):
                for text in c.help_for(topic) if topic else c.help_text():
                    self.emit(render.system(text))
            case c.Join(room=name, password=password):
                if lookup.is_current(name, self.room, self._room_name()):
                    raise _Refused(f"you are already in {name}")
                if self.keep_rooms and (joined := rooms.find_joined(node, name)) is not None:
                    self._switch(joined)
                    return
                self.say(f"joining {name}…")
                self._gate.joining(render.split_room_ref(name)[0])
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
                self._ended, self.room = room, None
                self.say(f"you left {name}")
                self._fall_back()
            case c.List():
                if self.room is None:
                    await self._show_rooms()
                else:
                    self.say(reports.members(self.room, self.view()))
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
                old_name = room.name
                with self._gate.own_change(("renamed", old_name, new_name)):
                    await room.rename(new_name)
                self.say(f"room {old_name} is now called {new_name}")
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
            case c.Away(text=text):
                result = node.set_away(text)
                if inspect.isawaitable(result):
                    await result
                away = node.me.away
                self.say(f"you are away: {away} (a private message to you gets this back;"
                         " /away alone: back)" if away is not None else "you are back")
            case c.Rename(name=new_name):
                await node.rename(new_name)
                self.say(f"you are now known as {new_name}")
            case c.Info(target=target):
                await queries.info(self, target)
            case c.SendFile() | c.Accept() | c.Decline() | c.Cancel() | c.Files():
                await transfers.run(cast(transfers.FilesNode, node),
                                    cast(transfers.FilesRoom | None, self.room), command,
                                    self.say)
            case c.SaveChat(path=path):
                await queries.save_chat(self, path)
            case c.Ping(target=target):
                await queries.ping(self, target)
            case c.Version():
                self.say(f"meshchat {meshchat.__version__} (protocol {PROTOCOL_VERSION},"
                         f" Python {platform.python_version()})")
            case c.Uptime():
                self.say(reports.uptime(node, self.room, self.view(), self._now()))
            case c.Broadcast(text=text):
                await node.broadcast(text)
                self.emit(render.broadcast(node.me, text, self.view()))
            case c.Kick(who=who, reason=reason) | c.Ban(who=who, reason=reason):
                room = self._need_room()
                ref = self._ref(who)
                found = lookup.peer_or_name(node, ref)
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
                for text in reports.bans(self._need_host()):
                    self.say(text)
            case c.Users():
                for text in reports.users(self._need_host(), self.view()):
                    self.say(text)
            case c.UserCount():
                self.say(reports.user_count(self._need_host()))
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
                with self._gate.own_change(("closed", name)):
                    await room.close()
                self._ended, self.room = room, None
                self.say(f"you closed {name}")
                self._fall_back()
            case c.Whoami():
                queries.whoami(self)
            case c.Bell(on=on):
                if on is not None:
                    self.bell = on
                where = "" if self._alert is not None else \
                    "; the output is not a terminal here, so nothing rings"
                self.say(f"the bell is {'on' if self.bell else 'off'}"
                         f" (it rings on a mention of your name or a private message{where})")
            case c.Clear():
                if self._clear is None:
                    raise _Refused("/clear clears the screen of the terminal interface only")
                self._clear()
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
        """Make a room just joined or opened current; the previous room is left in the
        background (it stays joined with ``keep_rooms``)."""
        previous = self.room
        self.room = room
        self._rooms.entered(self.node, room)
        self._gate.backlog_shown(())
        self._room_names.add(room.name)
        if previous is not None and previous is not room and not self.keep_rooms:
            task = asyncio.create_task(self._leave_quietly(previous))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def step_room(self, by: int) -> None:
        """Go to the joined room ``by`` places on (Alt+→ is 1, Alt+← is -1)."""
        try:
            target = rooms.Rooms.step(self.node, self.room, by)
            if target is None:
                self.say(rooms.NO_OTHER if self.room is not None else rooms.NO_ROOM)
            else:
                self._switch(target)
        except MeshchatError as exc:
            self.error(str(exc))

    def _switch(self, room: RoomAPI) -> None:
        line = rooms.now_in(room, self.view())
        self.room = room
        self._rooms.entered(self.node, room)
        self.say(line)

    def _fall_back(self) -> None:
        """The current room ended: with ``keep_rooms``, the one used before it is current."""
        ended, self._ended = self._ended, None
        if ended is not None and self.keep_rooms and self.room is None \
                and (target := self._rooms.fallback(self.node, ended)) is not None:
            with contextlib.suppress(MeshchatError):
                self._switch(target)

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
        self._gate.backlog_shown(shown)
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
