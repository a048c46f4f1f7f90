"""Where ``Node.start()`` spends its time: wall-clock spans of its phases (bench only).

``install()`` wraps the steps of a start where the code that runs them now lives (the node is a
facade over ``meshchat.runtime``; names it imports by ``from ... import`` are wrapped in the
importing module, since that is the name it calls): interfaces (``meshchat.node``), identity
(``meshchat.runtime.local``), settings load and save (the save runs in a thread during the
start), peers file, the stores (the SQLite log and the transfer store, opened in one thread
by ``Node._open_stores`` once the node has announced itself), admission core, transport bind, card
server, making the discovery (``meshchat.runtime.directory.make_discovery``), zeroconf itself,
the browser, the node's registration (first mDNS announcement queued), the query for peers, the
first three mDNS packets actually sent, and the first heartbeat (``Ticker.publish_heartbeat``).
Nothing in meshchat/ changes; each wrapped call appends ``(phase, t_start, t_end)``
(``time.time()``, the clock the observer's "listed" time is on) to ``SPANS``. Time not inside
any span is glue.

Dropped: the ``import mdns+zeroconf`` span. ``start()`` no longer imports anything (the
transport, discovery, keystore and log modules are imported with ``meshchat.node``), so there is
no import inside a start left to time; "make discovery" no longer includes one either.

Failing loudly: a target that no longer exists raises ``TraceTargetMissing`` naming it when
``install()``/``install_observer()`` runs, and a phase that ``Node.start()`` must run but that
left no span (the target exists but the code stopped calling it) raises the same error from
``spans_since()``. ``OBSERVER_REQUIRED`` lists the observer phases a discovery must produce
(bench/diagnose.py checks them).

Standalone, one process, on loopback only (run it in a namespace)::

    sh scripts/in-netns.sh .venv/bin/python bench/startup_trace.py [--trials 3]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import inspect
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SPANS: list[tuple[str, float, float]] = []
# Phases Node.start() must have produced by the time it returns: phase -> the wrapped target.
_REQUIRED: dict[str, str] = {}
_SENT = [0]  # mDNS packets sent since the last take()
_WRAPPED = "__startup_trace_wrapped__"

# The observer's phases that each discovery of a new node must produce.
OBSERVER_REQUIRED = (
    "obs: zeroconf browser callback",
    "obs: PeerBook.discovered",
    "obs:   transport connect",
    "obs:   send Hello",
    "obs:   emit PeerDiscovered",
)


class TraceTargetMissing(RuntimeError):
    """A wrapped target is gone, or is no longer called: the trace would measure nothing."""


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

    setattr(wrapper, _WRAPPED, True)
    return wrapper


def _async(phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.time()
        try:
            return await fn(*args, **kwargs)
        finally:
            SPANS.append((phase, t0, time.time()))

    setattr(wrapper, _WRAPPED, True)
    return wrapper


def _patch(module: str, attr: str, phase: str, kind: str = "sync", once: bool = False,
           required: bool = True) -> None:
    target = f"{module}.{attr}"
    try:
        owner: Any = importlib.import_module(module)
    except ImportError as exc:
        raise TraceTargetMissing(f"startup_trace: cannot import {module} (for phase "
                                 f"{phase!r}, target {target}): {exc}") from exc
    *path, name = attr.split(".")
    try:
        for part in path:
            owner = getattr(owner, part)
        fn = getattr(owner, name)
    except AttributeError as exc:
        raise TraceTargetMissing(f"startup_trace: {target} does not exist any more (phase "
                                 f"{phase!r}); point the trace at where that work lives "
                                 f"now") from exc
    if not callable(fn):
        raise TraceTargetMissing(f"startup_trace: {target} is not callable (phase {phase!r})")
    if getattr(fn, _WRAPPED, False):
        raise TraceTargetMissing(f"startup_trace: {target} is wrapped twice (phase {phase!r})")
    if (kind == "async") != inspect.iscoroutinefunction(fn):
        raise TraceTargetMissing(f"startup_trace: {target} is "
                                 f"{'not ' if kind == 'async' else ''}a coroutine function now "
                                 f"(phase {phase!r}); fix its kind")
    setattr(owner, name, _async(phase, fn) if kind == "async" else _sync(phase, fn, once))
    if required:
        _REQUIRED[phase] = target


def install(with_mdns_internals: bool = True) -> None:
    """Wrap the phases of ``Node.start()``. ``with_mdns_internals`` also wraps zeroconf's parts
    (all imported with ``meshchat.node`` now, so nothing is imported under the clock)."""
    _patch("meshchat.node", "resolve_interfaces", "interfaces")
    _patch("meshchat.runtime.local", "load_or_create_identity", "identity")
    _patch("meshchat.storage.settings", "SettingsStore.load", "settings load")
    # Only when the name or colour changed, in the stores' thread after the announcement.
    _patch("meshchat.storage.settings", "SettingsStore.save", "settings save (thread)",
           required=False)
    _patch("meshchat.storage.peers", "KnownPeers.__init__", "peers file")
    _patch("meshchat.node", "Node._open_stores", "stores: log, transfers, settings (thread)")
    _patch("meshchat.storage.log", "MessageLog.open", "  sqlite log opened", once=True)
    _patch("meshchat.admission", "Admission.__init__", "admission core")
    _patch("meshchat.transport.zmq", "ZmqTransport.start", "transport bind", "async")
    _patch("meshchat.discovery.static", "CardServer.start", "card server", "async")
    _patch("meshchat.node", "make_discovery", "make discovery")
    _patch("meshchat.runtime.ticker", "Ticker.publish_heartbeat", "first heartbeat", once=True)
    if with_mdns_internals:
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
    try:
        from zeroconf import Zeroconf

        send = Zeroconf.async_send
    except (ImportError, AttributeError) as exc:
        raise TraceTargetMissing(f"startup_trace: zeroconf.Zeroconf.async_send is gone (phase "
                                 f"'mDNS packet #n sent'): {exc}") from exc

    @functools.wraps(send)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.time()
        try:
            return send(self, *args, **kwargs)
        finally:
            _SENT[0] += 1
            if _SENT[0] <= 3:
                SPANS.append((f"mDNS packet #{_SENT[0]} sent", t0, time.time()))

    Zeroconf.async_send = wrapper  # type: ignore[method-assign]
    # The QU query is sent synchronously inside start(): at least one packet by then.
    _REQUIRED["mDNS packet #1 sent"] = "zeroconf.Zeroconf.async_send"


def install_observer() -> None:
    """Wrap what a running node does when mDNS tells it of a new peer, up to the event."""
    _patch("meshchat.discovery.mdns", "MdnsDiscovery._on_service_state_change",
           "obs: zeroconf browser callback", required=False)
    _patch("meshchat.runtime.peers", "PeerBook.discovered", "obs: PeerBook.discovered",
           required=False)
    # Batched: written in a thread on a beat once the table changed (no flush per peer now).
    _patch("meshchat.storage.peers", "KnownPeers.write",
           "obs:   peers file write (thread, batched)", required=False)
    _patch("meshchat.transport.zmq", "ZmqTransport.connect_peer", "obs:   transport connect",
           required=False)
    _patch("meshchat.runtime.wire", "Wire.send", "obs:   send Hello", required=False)
    _patch("meshchat.runtime.emitter", "Emitter.emit", "obs:   emit PeerDiscovered",
           required=False)


def take() -> list[tuple[str, float, float]]:
    """The spans so far, and forget them."""
    out = list(SPANS)
    SPANS.clear()
    _SENT[0] = 0
    return out


def missing_start_phases() -> list[str]:
    """Required start phases (with their targets) that left no span."""
    seen = {p for p, _, _ in SPANS}
    return [f"{phase!r} ({target})" for phase, target in _REQUIRED.items() if phase not in seen]


def spans_since(t0: float) -> list[dict[str, Any]]:
    """The spans in ms from ``t0``. Call once ``Node.start()`` returned: raises
    ``TraceTargetMissing`` if a phase it must run left no span."""
    if missing := missing_start_phases():
        raise TraceTargetMissing("startup_trace: Node.start() returned without running "
                                 + ", ".join(missing)
                                 + ": the target exists but is no longer called; point the "
                                   "trace at the code that does that work now")
    return [{"phase": p, "start_ms": (a - t0) * 1000, "end_ms": (b - t0) * 1000}
            for p, a, b in SPANS]


async def _trial(name: str, interface: str, data_dir: Path) -> list[dict[str, Any]]:
    from meshchat import Node

    take()
    t0 = time.time()
    async with Node(name=name, interfaces=[interface], data_dir=data_dir):
        spans = spans_since(t0)
        spans.append({"phase": "start() returned", "start_ms": 0.0,
                      "end_ms": (time.time() - t0) * 1000})
        await asyncio.sleep(0.3)  # the first announcement's packets
        spans += [s for s in spans_since(t0) if s["phase"].startswith("mDNS packet")
                  and s["start_ms"] > spans[-1]["end_ms"]]
    return spans


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Time the phases of fresh Node.start()s in this process (loopback: run "
                    "it under scripts/in-netns.sh).")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--interface", default="lo", help="interface to bind and announce on")
    ap.add_argument("--no-mdns-internals", action="store_true")
    args = ap.parse_args(argv)
    install(with_mdns_internals=not args.no_mdns_internals)
    phases: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="startup-trace-") as tmp:
        for i in range(args.trials):
            spans = asyncio.run(_trial(f"trace{i}", args.interface, Path(tmp) / str(i)))
            for s in spans:
                phases.setdefault(s["phase"], []).append((s["start_ms"], s["end_ms"]))
    med = statistics.median
    print(f"{'phase (ms after t0, medians of ' + str(args.trials) + ')':46} {'start':>7} "
          f"{'end':>7} {'took':>7} {'n':>3}")
    for phase, sp in sorted(phases.items(), key=lambda kv: med(s for s, _ in kv[1])):
        print(f"{phase:46} {med(s for s, _ in sp):7.2f} {med(e for _, e in sp):7.2f} "
              f"{med(e - s for s, e in sp):7.2f} {len(sp):3}")
    return 0


if __name__ == "__main__":
    if __package__ in (None, ""):
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
