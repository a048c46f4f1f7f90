"""`meshchat rooms` looks without leaving a trace: no name saved, no key made in the data dir,
no peer that takes it for one of its own; and it still learns every room its peers host."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from click.testing import CliRunner

from meshchat import Node
from meshchat.cli import main
from meshchat.config import Timings
from meshchat.discovery.base import DiscoveryHandlers
from meshchat.discovery.memory import MemoryDiscovery, MemoryDiscoveryHub
from meshchat.protocol.messages import PeerCard
from meshchat.transport.memory import MemoryTransport

from .conftest import Mesh


def test_rooms_query_leaves_the_users_data_dir_alone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "settings.json").write_text('{"name": "alice"}')
    result = CliRunner().invoke(main, ["rooms", "--json", "--timeout", "0.2", "--loopback-only",
                                       "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "[]"
    assert sorted(p.name for p in data.iterdir()) == ["settings.json"]
    assert '"alice"' in (data / "settings.json").read_text()


class PeersOnly(MemoryDiscovery):
    """Announces nothing and hears the peers' cards but none of their room records: what a
    looking node lists must then come from the peers themselves."""

    def __init__(self, hub: MemoryDiscoveryHub) -> None:
        super().__init__(hub, announce=False)

    async def start(self, me: PeerCard, handlers: DiscoveryHandlers) -> None:
        await super().start(me, replace(handlers, on_room=lambda room: None))


async def test_a_looking_node_asks_each_peer_what_it_hosts(mesh: Mesh, tmp_path: Path) -> None:
    """No peer dials a node that only looks (it announces nothing), so its SUB hears no
    presence: it asks each peer (``Look``) and the answer, their Hello, lists their rooms."""
    alice = await mesh.add("alice")
    bob = await mesh.add("bob")
    await alice.host("lobby")
    await bob.host("quiet corner", password="pw")
    looker = Node(data_dir=tmp_path / "looker", timings=Timings.fast(), loopback_only=True,
                  listen_only=True, transport=MemoryTransport(mesh.network),
                  discovery=PeersOnly(mesh.hub))
    await looker.start()
    try:
        infos = await looker.rooms(timeout=0.5)
        assert sorted((i.name, i.host, i.has_password) for i in infos) == [
            ("lobby", "alice", False), ("quiet corner", "bob", True)]
        assert alice.stats["looks_answered"] == 1 and bob.stats["looks_answered"] == 1
        # It stayed out of sight: nobody took it for a peer.
        assert looker.peer_id not in {p.peer_id for p in alice.peers() + bob.peers()}
    finally:
        await looker.close()
