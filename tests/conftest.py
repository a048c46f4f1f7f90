"""Suite-wide guards.

Socket tests run only inside a network namespace of their own, which ``make test`` makes
(``scripts/in-netns.sh``: ``unshare -n`` with only ``lo``), so nothing a test sends can reach
the machine's real interfaces. Outside one:

- tests marked ``net`` or ``sockets`` (everything under tests/net/ is ``net``) fail at setup;
- any other test that binds, connects or sends a Python socket to a non-loopback address has
  that call refused (an audit hook) and fails.

Also: a test fails if threads started by meshchat outlive it; and the garbage collector
never scans the suite's heap inside a test (``_no_collection_of_the_suites_heap``).
"""

from __future__ import annotations

import gc
import ipaddress
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

MAKE_TEST_HINT = "run the suite with `make test`: it runs pytest inside a fresh `unshare -n`"
NET_TESTS_DIR = Path(__file__).parent / "net"
THREAD_EXIT_GRACE_S = 2.0


def _netns(pid: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def network_isolation() -> tuple[bool, str]:
    """Whether this process runs in a network namespace of its own, and why we think so.

    The namespace differs from PID 1's; where PID 1's cannot be read (some VMs and sandboxes),
    it is the one ``scripts/in-netns.sh`` made and recorded in ``MESHCHAT_TEST_NETNS``.
    """
    own = _netns("self")
    if own is None:
        return False, "cannot read /proc/self/ns/net"
    init = _netns("1")
    if init is not None:
        if own != init:
            return True, f"network namespace {own} differs from PID 1's {init}"
        return False, f"this process shares PID 1's network namespace {own}"
    if os.environ.get("MESHCHAT_TEST_NETNS") == own:
        return True, f"network namespace {own} was made by scripts/in-netns.sh"
    return False, (
        f"PID 1's network namespace is unreadable and {own} is not the one "
        "scripts/in-netns.sh made (MESHCHAT_TEST_NETNS)"
    )


ISOLATED, ISOLATION_REASON = network_isolation()
_refused: list[str] = []


def _loopback_only(family: int, address: object) -> bool:
    """Whether a socket address stays on this machine (loopback, AF_UNIX, netlink)."""
    if family in (socket.AF_UNIX, socket.AF_NETLINK):
        return True
    if family not in (socket.AF_INET, socket.AF_INET6) or not isinstance(address, tuple):
        return False
    host = address[0]
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return False  # a host name, or "" / "<broadcast>"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _socket_audit(event: str, args: tuple[object, ...]) -> None:
    if event not in ("socket.bind", "socket.connect", "socket.sendto", "socket.sendmsg"):
        return
    sock, address = args[0], args[1]
    if address is None:
        return
    family = getattr(sock, "family", None)
    if isinstance(family, int) and _loopback_only(family, address):
        return
    message = (
        f"refused {event} to {address!r}: not in an isolated network namespace "
        f"({ISOLATION_REASON}); {MAKE_TEST_HINT}"
    )
    _refused.append(message)
    raise PermissionError(message)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sockets: real sockets on loopback (needs an isolated network namespace)"
    )
    if not ISOLATED:
        sys.addaudithook(_socket_audit)


def pytest_report_header(config: pytest.Config) -> str:
    state = "isolated" if ISOLATED else "NOT isolated (socket tests refused)"
    return f"network: {state} — {ISOLATION_REASON}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if NET_TESTS_DIR in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.net)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if ISOLATED:
        return
    if any(item.iter_markers("net")) or any(item.iter_markers("sockets")):
        pytest.fail(
            f"{item.nodeid} uses real sockets, but {ISOLATION_REASON}; {MAKE_TEST_HINT}",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def _no_network_escape() -> Iterator[None]:
    """Fail a test whose socket calls the audit hook refused (even if the code swallowed it)."""
    seen = len(_refused)
    yield
    if len(_refused) > seen:
        pytest.fail("\n".join(_refused[seen:]), pytrace=False)


def _started_by_meshchat(thread: threading.Thread) -> bool:
    target = getattr(thread, "_target", None)
    modules = (type(thread).__module__, getattr(target, "__module__", None) or "")
    return thread.name.startswith("meshchat") or any(
        m == "meshchat" or m.startswith("meshchat.") for m in modules
    )


@pytest.fixture(autouse=True)
def _no_leaked_meshchat_threads() -> Iterator[None]:
    """Fail a test that leaves threads of our package running (after a short grace)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + THREAD_EXIT_GRACE_S
    leaked = []
    for thread in threading.enumerate():
        if thread in before or not _started_by_meshchat(thread):
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            leaked.append(thread)
    if leaked:
        pytest.fail(f"threads of meshchat left running: {leaked!r}", pytrace=False)


COLLECT_EVERY_TESTS = 50
_tests_run = [0]


@pytest.fixture(autouse=True)
def _no_collection_of_the_suites_heap() -> Iterator[None]:
    """The in-memory tests run nodes inside this process, beside what a thousand tests left
    on the heap: a full collection of it took 130-220 ms (measured: 63 pauses over 10 ms in
    the unit and node tests), landing in whatever a test was timing (a 100 ms ping budget).
    A node's own process has no such heap. So what exists when a test starts is frozen for
    its length (the collector scans only what the test allocates) and collected between
    tests, every ``COLLECT_EVERY_TESTS``, where nothing is timed."""
    _tests_run[0] += 1
    if _tests_run[0] % COLLECT_EVERY_TESTS == 0:
        gc.unfreeze()
        gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
