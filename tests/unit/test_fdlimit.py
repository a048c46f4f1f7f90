"""Issue 9: a node raises its soft open-file limit to the hard limit at start."""

from __future__ import annotations

import resource
import subprocess
import sys
from collections.abc import Iterator

import pytest

from meshchat.fdlimit import FDS_PER_PEER, needed_fds, raise_fd_limit


@pytest.fixture
def restore_limit() -> Iterator[tuple[int, int]]:
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield before
    resource.setrlimit(resource.RLIMIT_NOFILE, before)


def test_the_soft_limit_is_raised_to_the_hard_one(restore_limit: tuple[int, int]) -> None:
    _soft, hard = restore_limit
    low = min(256, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    after = raise_fd_limit(max_peers=10)
    assert after is not None
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard or hard == resource.RLIM_INFINITY
    assert after[0] >= low


def test_a_hard_limit_too_low_for_max_peers_is_logged() -> None:
    # In a child process: a lowered hard limit cannot always be raised again.
    code = (
        "import logging, resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='%(message)s')\n"
        "from meshchat.fdlimit import raise_fd_limit\n"
        "print(raise_fd_limit(max_peers=1024))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert "open-file limit 200 is below the" in out, out
    assert f"manage about {(200 - 64) // FDS_PER_PEER} peers" in out, out
    assert needed_fds(1024) > 200
