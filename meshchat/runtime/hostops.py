"""Host-only operations the user asks for (``room.kick("bob")``, ``/lock``, ...).

The request becomes one ``meshchat.moderation`` op with names already resolved, and the host
applies it to its room core and publishes the signed result. A member that is not the host
asks the host, which refuses: host-only operations are only ever done by the host for the
host.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from .. import moderation as mod
from .. import room as rules
from ..config import Limits, Timings
from ..errors import AmbiguousName, MeshchatError, NotHost, PeerNotFound
from ..identity import fingerprint_of
from ..protocol.messages import CommandResult, HostCommand
from .peers import PeerBook
from .rooms import JoinedRoom
from .session import Sessions
from .wire import Wire

__all__ = ["HostOps"]


class HostOps:
    """Run one host-only operation on a joined room."""

    def __init__(self, me: bytes, sessions: Sessions, wire: Wire, peers: PeerBook,
                 limits: Limits, timings: Timings, random_bytes: Callable[[int], bytes]
                 ) -> None:
        self._me = me
        self._sessions = sessions
        self._wire = wire
        self._peers = peers
        self._limits = limits
        self._timings = timings
        self._random_bytes = random_bytes

    async def run(self, jr: JoinedRoom, request: str, *args: str) -> None:
        """Done here if we host, else asked of the host (which refuses it)."""
        if not jr.core.is_host:
            await self._ask_host(jr, request, args)
            return
        op = await self._op(jr, request, args)
        old = jr.state
        sessions = self._sessions
        sessions.flush_chat(jr)  # what was said before the change goes out before it
        if mod.removes_member(op, old):
            assert isinstance(op, mod.KickPeer | mod.BanPeer)
            sessions.host_remove(jr, op.target, rules.KICKED if isinstance(op, mod.KickPeer)
                                 else rules.BANNED, op.reason)
            return
        epoch = sessions.new_key(jr) if isinstance(op, mod.SetPassword) else None
        mod.apply(jr.core, op, epoch)
        if epoch is not None:
            sessions.distribute_key(jr, epoch)
        sessions.host_publish(jr, old)

    async def _op(self, jr: JoinedRoom, request: str, args: Sequence[str]) -> mod.ModerationOp:
        """The user's request with names resolved; raises a clear error if it cannot be."""
        reason = args[1] if len(args) > 1 else ""
        match request:
            case "handoff":
                target = self._member_id(jr, args[0])
                if target == self._me:
                    raise MeshchatError("you are already the host")
                return mod.Handoff(target)
            case "kick" | "ban":
                target = self._peers.resolve(args[0])
                if target == self._me:
                    raise MeshchatError(f"you cannot {request} yourself")
                if request == "kick":
                    if not rules.is_member(jr.state, target):
                        raise PeerNotFound(f"{args[0]} is not in this room")
                    return mod.KickPeer(target, reason)
                return mod.BanPeer(target, self._peers.info(target).name, reason)
            case "unban":
                return mod.UnbanPeer(self._ban_id(jr, args[0]))
            case "lock":
                return mod.LockRoom()
            case "unlock":
                return mod.UnlockRoom()
            case "close":
                return mod.CloseRoom()
            case "rename":
                new = args[0].strip()
                if not new or len(new) > self._limits.max_room_name_chars:
                    raise MeshchatError("a room name is 1 to "
                                        f"{self._limits.max_room_name_chars} characters")
                return mod.RenameRoom(new)
            case "password":
                verifier = None
                if args[0]:
                    verifier = await asyncio.to_thread(rules.make_verifier, args[0],
                                                       self._random_bytes)
                return mod.SetPassword(verifier)
        raise MeshchatError(f"unknown room operation {request}")

    async def _ask_host(self, jr: JoinedRoom, op: str, args: Sequence[str]) -> None:
        """Ask the host: it refuses anything host-only from a non-host, and says so."""
        rid = self._wire.next_request_id()
        command = HostCommand(jr.room_id, rid, op, tuple(a for a in args if a))
        try:
            reply = await self._wire.request_once(jr.state.host, command, rid,
                                                  self._timings.request_timeout_s)
        except TimeoutError as exc:
            raise NotHost(f"only the host can {mod.verb(op)}") from exc
        if isinstance(reply, CommandResult) and not reply.ok:
            raise NotHost(reply.detail or f"only the host can {mod.verb(op)}")

    def _member_id(self, jr: JoinedRoom, who: str) -> bytes:
        pid = self._peers.resolve(who)
        if not rules.is_member(jr.state, pid):
            raise PeerNotFound(f"{who} is not in this room")
        return pid

    def _ban_id(self, jr: JoinedRoom, who: str) -> bytes:
        q = who.strip().casefold().lstrip("#")
        hits = [b.peer_id for b in jr.state.bans
                if b.name.casefold() == q or (len(q) >= 4 and fingerprint_of(b.peer_id)
                                              .startswith(q))]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise AmbiguousName(who, [f"{self._peers.info(p).name} ({fingerprint_of(p)[:8]})"
                                      for p in hits])
        raise PeerNotFound(f"{who} is not banned here (see /banned)")
