"""Discovery: announcing this node and its hosted rooms, and hearing of others.

``base`` holds the seam (``Discovery``, ``DiscoveryHandlers``, ``RoomAnnouncement``). The
implementations are imported from their modules so that zeroconf loads only when used:
``mdns.MdnsDiscovery`` (multicast DNS-SD), ``static.StaticDiscovery`` with its
``CardServer`` (``--peer HOST:PORT``), ``static.CombinedDiscovery`` (several at once) and
``memory.MemoryDiscovery`` (in-process, for tests). ``interfaces.resolve_interfaces`` turns
``--interface`` options into addresses.
"""

from .base import Discovery, DiscoveryHandlers, RoomAnnouncement

__all__ = ["Discovery", "DiscoveryHandlers", "RoomAnnouncement"]
