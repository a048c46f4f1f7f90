"""Starting meshchat agents (bench.agent) in the lab's hosts, from the orchestrator's side."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

from bench.lab import Host, Lab, Unavailable, Worker, spawn_worker


def meshchat_missing() -> str | None:
    """Why the product cannot be benchmarked yet, or None when its API is importable."""
    try:
        from meshchat import Node, Timings  # noqa: F401
        from meshchat.events import HostChanged, Message, PeerDiscovered  # noqa: F401
    except Exception as exc:
        return f"meshchat.Node not importable ({exc.__class__.__name__}: {exc})"
    return None


def spawn_agent(host: Host, name: str, timings: str = "default", tag: str = "",
                watch_peers: bool = False, profile: str | None = None,
                trace_start: bool = False, trace_observer: bool = False,
                data_dir: str | None = None, **extra: object) -> Worker:
    """Start one node in ``host`` with a fresh data dir (so a fresh identity) unless
    ``data_dir`` names one (a restart); with ``profile`` (a path) the agent runs under
    cProfile and dumps its stats there. ``extra`` goes into the agent's config."""
    if data_dir is None:
        data_dir = str(host.lab.workdir / "data" / f"{tag}-{name}-{uuid.uuid4().hex[:8]}")
    config = {"name": name, "interface": "eth0", "data_dir": data_dir,
              "timings": timings, "watch_peers": watch_peers, "profile": profile,
              "trace_start": trace_start, "trace_observer": trace_observer, **extra}
    return spawn_worker(host, f"mc-{tag}-{name}", "agent", json.dumps(config))


def start_agents(lab: Lab, names: Sequence[str], timings: str = "default", tag: str = "",
                 first_host: int = 0, watch_peers: bool = False,
                 profile_dir: str | None = None,
                 limits: dict[str, float] | None = None) -> list[Worker]:
    """One node per name in hosts first_host, first_host+1, ...; waits until all have started.
    With ``profile_dir`` each runs under cProfile, dumped to ``<profile_dir>/<tag>-<name>.prof``;
    ``limits``: ``Limits`` fields that differ from the defaults."""
    missing = meshchat_missing()
    if missing:
        raise Unavailable(missing)
    agents = [spawn_agent(lab.hosts[first_host + i], name, timings, tag, watch_peers,
                          profile=f"{profile_dir}/{tag}-{name}.prof" if profile_dir else None,
                          limits=limits or {})
              for i, name in enumerate(names)]
    for agent in agents:
        agent.expect_event("started", 30 + 2 * len(agents))
    return agents
