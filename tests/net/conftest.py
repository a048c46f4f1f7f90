"""Fixtures for multi-host tests: labs of network namespaces (see netlab.py).

These tests need root, iproute2 and tcpdump. Without them they fail — CI runs as root and must
run them, so a silent skip would hide a broken CI.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from .netlab import Lab, LabError, remove_stale_namespaces

LabFactory = Callable[..., Lab]


def _missing_requirements() -> list[str]:
    missing = []
    if os.geteuid() != 0:
        missing.append("root (run `sudo make test`)")
    else:
        uid_map = Path("/proc/self/uid_map").read_text().split()
        if uid_map[:3] != ["0", "0", "4294967295"]:
            missing.append("real root, not root of a user namespace (run `sudo make test`)")
    for tool, package in (("ip", "iproute2"), ("tcpdump", "tcpdump")):
        if shutil.which(tool) is None:
            missing.append(f"`{tool}` (apt-get install {package}; `make install` does it as root)")
    return missing


@pytest.fixture(scope="session")
def netlab_ready() -> None:
    """Fail (not skip) when the lab cannot run here; remove namespaces of dead runs once."""
    missing = _missing_requirements()
    if missing:
        pytest.fail("network lab tests need " + "; ".join(missing), pytrace=False)
    try:
        remove_stale_namespaces()
    except LabError as exc:
        pytest.fail(f"network lab tests cannot use `ip netns`: {exc}", pytrace=False)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    setattr(item, f"netlab_report_{report.when}", report)
    return report


@pytest.fixture
def lab_factory(
    netlab_ready: None, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[LabFactory]:
    """``lab_factory(n, **kwargs)`` starts a ``Lab`` of n hosts; all are closed after the test.

    Work dirs (host homes, pcaps) stay under pytest's tmp_path. When the test fails, the tail of
    every process's output is printed in the teardown section of the report.
    """
    labs: list[Lab] = []

    def make(n_hosts: int, **kwargs: object) -> Lab:
        kwargs.setdefault("workdir", tmp_path / f"lab{len(labs)}")
        lab = Lab(n_hosts, **kwargs)  # type: ignore[arg-type]
        labs.append(lab)
        lab.start()
        return lab

    yield make
    report = getattr(request.node, "netlab_report_call", None)
    if report is None or report.failed:
        for lab in labs:
            for proc in lab.procs:
                print(proc.describe(f"== {lab.prefix}{proc.label} at failure"))
    for lab in labs:
        lab.close()


@pytest.fixture
def lab3(lab_factory: LabFactory) -> Lab:
    """Three hosts on one bridge."""
    return lab_factory(3)
