"""The process's file-descriptor limit, raised once for a node with many peers (issue 9).

Each peer costs one TCP connection on each of our four sockets — our PUB's and our dialer's
to it, its PUB's to our SUB and its dialer's to our ROUTER — and nothing else (no socket of its
own); the common default soft limit of 1024 caps a node near 240 peers. At start a node
raises its soft ``RLIMIT_NOFILE`` to the hard limit and logs a warning when even that is too
low for ``Limits.max_peers``.
"""

from __future__ import annotations

import logging

__all__ = ["FDS_PER_PEER", "FDS_RESERVED", "needed_fds", "raise_fd_limit"]

log = logging.getLogger(__name__)

FDS_PER_PEER = 3  # 3.0 measured with 200 peers (test_many_peers_net.py)
FDS_RESERVED = 64  # the node's own sockets, the message log, mDNS, files being sent


def needed_fds(max_peers: int) -> int:
    return FDS_RESERVED + FDS_PER_PEER * max_peers


def raise_fd_limit(max_peers: int) -> tuple[int, int] | None:
    """Raise the soft limit to the hard one; (soft, hard) after, or None where there is no
    such limit (not POSIX). Never raises: a limit we cannot change is logged."""
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed_fds(max_peers))
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s",
                        soft, target, exc)
    if soft != resource.RLIM_INFINITY and soft < needed_fds(max_peers):
        log.warning("open-file limit %d is below the %d that %d peers need: this node will "
                    "manage about %d peers (raise it with ulimit -n)", soft,
                    needed_fds(max_peers), max_peers,
                    max(0, (soft - FDS_RESERVED) // FDS_PER_PEER))
    else:
        log.info("open-file limit %d (hard %d)", soft, hard)
    return soft, hard
