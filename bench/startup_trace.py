"""Where ``Node.start()`` spends its time: wall-clock spans of its phases (bench only).

``install()`` wraps, in the modules ``Node.start`` takes them from (it imports them when it
runs, so module attributes are what it gets), the steps of a start: interfaces, identity,
settings, peers file, SQLite log, transport bind, card server, making the discovery (which
imports zeroconf), zeroconf itself, the browser, the node's registration (first mDNS
announcement queued), the query for peers, the first three mDNS packets actually sent, and the
first heartbeat. Nothing in meshchat/
changes; each wrapped call appends ``(phase, t_start, t_end)`` (``time.time()``, the clock the
observer's "listed" time is on) to ``SPANS``. Time not inside any span is imports and glue.
"""

from __future__ import annotations

import functools
import importlib
import time
from collections.abc import Callable
from typing import Any

SPANS: list[tuple[str, float, float]] = []


def _sync(phase: str, fn: Callable[..., Any], once: bool = False) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if once and any(p == phase for p, _, _ in SPANS):
            return fn(*args, **kwargs)
        t0 = time.time()
        try:
            return fn(*args, **kwargs)
        finally:
            SPANS.append((phase, t0, time.time()))

    return wrapper


def _async(phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.time()
        try:
            return await fn(*args, **kwargs)
        finally:
            SPANS.append((phase, t0, time.time()))

    return wrapper


def _patch(module: str, attr: str, phase: str, kind: str = "sync", once: bool = False) -> None:
    owner: Any = importlib.import_module(module)
    *path, name = attr.split(".")
    for part in path:
        owner = getattr(owner, part)
    fn = getattr(owner, name)
    setattr(owner, name, _async(phase, fn) if kind == "async" else _sync(phase, fn, once))


def install(with_mdns_internals: bool = True) -> None:
    """Wrap the phases. ``with_mdns_internals`` imports zeroconf now (to wrap its parts): the
    import then falls before the clock starts, and is measured on its own as ``import``."""
    _patch("meshchat.discovery.interfaces", "resolve_interfaces", "interfaces")
    _patch("meshchat.storage.keystore", "load_or_create_identity", "identity")
    _patch("meshchat.storage.settings", "SettingsStore.load", "settings load")
    _patch("meshchat.storage.settings", "SettingsStore.save", "settings save")
    _patch("meshchat.storage.peers", "KnownPeers.__init__", "peers file")
    _patch("meshchat.storage.log", "MessageLog.__init__", "sqlite log")
    _patch("meshchat.node", "Admission.__init__", "admission core")
    _patch("meshchat.transport.zmq", "ZmqTransport.start", "transport bind", "async")
    _patch("meshchat.discovery.static", "CardServer.start", "card server", "async")
    _patch("meshchat.node", "Node._make_discovery", "make discovery (+import)")
    _patch("meshchat.node", "Node._publish", "first heartbeat", once=True)
    if with_mdns_internals:
        t0 = time.time()
        importlib.import_module("meshchat.discovery.mdns")
        SPANS.append(("import mdns+zeroconf (before t0)", t0, time.time()))
        _patch("meshchat.discovery.mdns", "MdnsDiscovery.start", "zeroconf discovery.start",
               "async")
        _patch("meshchat.discovery.mdns", "AsyncZeroconf.__init__", "  AsyncZeroconf()")
        _patch("meshchat.discovery.mdns", "AsyncServiceBrowser.__init__", "  browser")
        _patch("meshchat.discovery.mdns", "MdnsDiscovery._register", "  register node",
               "async")
        _patch("meshchat.discovery.mdns", "MdnsDiscovery._ask_now", "  QU query")
        _count_sends()


def _count_sends() -> None:
    """Each mDNS packet the node sends, numbered: when the first announcement really left."""
    from zeroconf import Zeroconf

    send = Zeroconf.async_send
    sent = [0]

    @functools.wraps(send)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.time()
        try:
            return send(self, *args, **kwargs)
        finally:
            sent[0] += 1
            if sent[0] <= 3:
                SPANS.append((f"mDNS packet #{sent[0]} sent", t0, time.time()))

    Zeroconf.async_send = wrapper  # type: ignore[method-assign]


def install_observer() -> None:
    """Wrap what a running node does when mDNS tells it of a new peer, up to the event."""
    importlib.import_module("meshchat.discovery.mdns")
    _patch("meshchat.discovery.mdns", "MdnsDiscovery._on_service_state_change",
           "obs: zeroconf browser callback")
    _patch("meshchat.node", "Node._on_discovered_peer", "obs: Node._on_discovered_peer")
    _patch("meshchat.storage.peers", "KnownPeers.flush", "obs:   peers file write (flush)")
    _patch("meshchat.transport.zmq", "ZmqTransport.connect_peer", "obs:   transport connect")
    _patch("meshchat.node", "Node._send", "obs:   send Hello")
    _patch("meshchat.node", "Node._emit", "obs:   emit PeerDiscovered")


def take() -> list[tuple[str, float, float]]:
    """The spans so far, and forget them."""
    out = list(SPANS)
    SPANS.clear()
    return out


def spans_since(t0: float) -> list[dict[str, Any]]:
    """The spans in ms from ``t0``."""
    return [{"phase": p, "start_ms": (a - t0) * 1000, "end_ms": (b - t0) * 1000}
            for p, a, b in SPANS]
